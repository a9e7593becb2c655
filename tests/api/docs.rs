//! docs/configuration.md's flag tables are rendered from the command line itself (the clap
//! definition `--help` prints), so the two cannot drift apart. Each command's table sits
//! between `<!-- flags:<command>:begin -->` and `<!-- flags:<command>:end -->`; with
//! `UPDATE_DOCS=1` the test rewrites the tables instead of failing:
//! `UPDATE_DOCS=1 cargo test --test api docs::`.

use std::path::Path;

use clap::{ArgAction, CommandFactory};
use redmine_authz::cli::Cli;

const CONFIGURATION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

#[test]
fn configuration_flag_tables_match_the_command_line() {
    let path = Path::new(CONFIGURATION);
    let written = std::fs::read_to_string(path).expect("docs/configuration.md");
    let rendered = with_flag_tables(&written).unwrap_or_else(|problem| panic!("{problem}"));
    if std::env::var_os("UPDATE_DOCS").is_some() {
        if rendered != written {
            std::fs::write(path, &rendered).expect("write docs/configuration.md");
        }
        return;
    }
    if let Some((line, want, have)) = first_difference(&rendered, &written) {
        panic!(
            "docs/configuration.md disagrees with the command line at line {line}:\n  \
             --help: {want}\n  doc:    {have}\nRegenerate the tables with \
             `UPDATE_DOCS=1 cargo test --test api docs::` (the text comes from the doc \
             comments in src/cli.rs)"
        );
    }
}

#[test]
fn a_table_renders_flags_environment_defaults_and_choices() {
    let mut cli = Cli::command();
    cli.build();
    let serve = cli.find_subcommand("serve").expect("serve");
    let table = flag_table(serve);
    let row = |flag: &str| {
        table
            .lines()
            .find(|line| line.starts_with(&format!("| `{flag}` |")))
            .unwrap_or_else(|| panic!("no row for {flag} in\n{table}"))
            .to_owned()
    };
    assert!(row("--listen").contains("| `AUTHZ_LISTEN` | `0.0.0.0:9191` |"));
    assert!(row("--allow-anonymous").contains("| `AUTHZ_ALLOW_ANONYMOUS` | off |"));
    assert!(row("--database-url").contains("| `DATABASE_URL` | unset |"));
    assert!(row("--audit-log").contains("`all`, `deny-only`, `off`"));
    assert!(row("--listen-invalidations").contains("`true`, `false`"));
    assert!(!table.contains("`--help`"), "clap's own flags stay out");

    let check = flag_table(cli.find_subcommand("check").expect("check"));
    assert!(check.contains("| `METHOD` |  | required |"), "{check}");
    assert!(check.contains("| `-H`, `--header` |"), "{check}");
}

#[test]
fn markers_are_required_for_every_command_and_only_for_commands() {
    let missing = with_flag_tables("no tables here\n").unwrap_err();
    assert!(missing.contains("flags:serve:begin"), "{missing}");

    let mut all_markers = String::new();
    let mut cli = Cli::command();
    cli.build();
    for name in command_names(&cli) {
        all_markers += &format!("<!-- flags:{name}:begin -->\n<!-- flags:{name}:end -->\n");
    }
    let stray = format!("{all_markers}<!-- flags:serv:begin -->\n<!-- flags:serv:end -->\n");
    let problem = with_flag_tables(&stray).unwrap_err();
    assert!(problem.contains("`serv`"), "{problem}");

    let filled = with_flag_tables(&all_markers).expect("every command has its markers");
    assert!(filled.contains("| `--listen` |"));
    assert_eq!(
        with_flag_tables(&filled).unwrap(),
        filled,
        "rendering is stable"
    );
}

/// `doc` with every command's table rendered between its markers.
fn with_flag_tables(doc: &str) -> Result<String, String> {
    let mut cli = Cli::command();
    cli.build();
    let names = command_names(&cli);
    const MARKER: &str = "<!-- flags:";
    for marked in doc
        .match_indices(MARKER)
        .map(|(at, _)| &doc[at + MARKER.len()..])
    {
        let name = marked.split(':').next().unwrap_or_default();
        if !names.contains(&name.to_owned()) {
            return Err(format!(
                "docs/configuration.md has a flag table for `{name}`, which is no command"
            ));
        }
    }
    let mut out = doc.to_owned();
    for name in names {
        let begin = format!("<!-- flags:{name}:begin -->\n");
        let end = format!("<!-- flags:{name}:end -->");
        let (Some(start), Some(stop)) = (out.find(&begin), out.find(&end)) else {
            return Err(format!(
                "docs/configuration.md needs `{}` and `{end}` around the table of `{name}`",
                begin.trim_end()
            ));
        };
        if stop < start {
            return Err(format!("`{end}` comes before its begin marker"));
        }
        let command = cli.find_subcommand(&name).expect("listed above");
        let table = format!("\n{}\n", flag_table(command));
        out.replace_range(start + begin.len()..stop, &table);
    }
    Ok(out)
}

/// The commands an operator runs (clap's own `help` left out).
fn command_names(cli: &clap::Command) -> Vec<String> {
    cli.get_subcommands()
        .map(|command| command.get_name().to_owned())
        .filter(|name| name != "help")
        .collect()
}

/// One row per argument, as `--help` describes it: flag, environment variable, default,
/// help text and the values it takes.
fn flag_table(command: &clap::Command) -> String {
    let mut table = String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    let shown = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version"));
    for arg in shown {
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("`-{short}`, `--{long}`"),
            (Some(short), None) => format!("`-{short}`"),
            (None, Some(long)) => format!("`--{long}`"),
            (None, None) => format!("`{}`", arg.get_id().as_str().to_uppercase()),
        };
        let env = arg
            .get_env()
            .map(|name| format!("`{}`", name.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<_> = arg.get_default_values().iter().collect();
        let default = if matches!(arg.get_action(), ArgAction::SetTrue) {
            "off".to_owned()
        } else if arg.is_required_set() {
            "required".to_owned()
        } else if defaults.is_empty() {
            "unset".to_owned()
        } else if defaults.iter().all(|value| value.is_empty()) {
            "empty".to_owned()
        } else {
            let values: Vec<_> = defaults
                .iter()
                .map(|value| format!("`{}`", value.to_string_lossy()))
                .collect();
            values.join(", ")
        };
        let mut meaning = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|help| help.to_string())
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let choices: Vec<_> = arg
            .get_possible_values()
            .iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| format!("`{}`", value.get_name()))
            .collect();
        if !choices.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
            meaning += &format!(" (one of {})", choices.join(", "));
        }
        let meaning = meaning.replace('|', "\\|");
        table += &format!("| {flag} | {env} | {default} | {meaning} |\n");
    }
    table
}

/// The first line where `want` and `have` differ, with both versions of it.
fn first_difference(want: &str, have: &str) -> Option<(usize, String, String)> {
    if want == have {
        return None;
    }
    let (want, have): (Vec<_>, Vec<_>) = (want.lines().collect(), have.lines().collect());
    let last = want.len().max(have.len());
    let show = |line: Option<&&str>| line.map_or("(end of file)".to_owned(), |l| l.to_string());
    match (0..last).find(|&at| want.get(at) != have.get(at)) {
        Some(at) => Some((at + 1, show(want.get(at)), show(have.get(at)))),
        None => Some((last, "(a final newline)".to_owned(), "(none)".to_owned())),
    }
}
