# Sourced by scripts/bench.sh and scripts/profile.sh: builds the gate, the floor and the load
# generator with the release profile and sets $floor, $load and $target_dir.
cargo build --release --bin redmine-authz --bench floor --bench load
# The bench executables, by target name, from cargo's own report.
executable() {
    cargo build --release --bench "$1" --message-format=json 2>/dev/null |
        jq -r --arg name "$1" 'select(.reason == "compiler-artifact" and .target.name == $name and .executable != null) | .executable' |
        tail -n1
}
floor=$(executable floor)
load=$(executable load)
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
