//! Which Redmine the gate reads requests for (`--redmine-version`). Redmine releases read the
//! same request differently: Redmine 4.2 to 5.1 parse parameters with Rack 2, 6.x with Rack 3,
//! 7.0 with Rails 8.1's own parser (`params`), and some routes fix their format to HTML from
//! 5.1.8 or 6.0 on (`routes`). docs/redmine-facts.md has the facts per release.

/// The Redmine release whose reading the gate follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedmineVersion {
    /// Any release from 4.2 on: where releases read a request differently, the gate fails
    /// closed (an ambiguous credential, a gated request), never picks one.
    #[default]
    Any,
    /// One release, `major.minor.patch`.
    Release { major: u16, minor: u16, patch: u16 },
}

impl RedmineVersion {
    /// The oldest release whose reading the gate knows.
    const OLDEST: (u16, u16) = (4, 2);

    /// `any`, or `MAJOR.MINOR[.PATCH]` from 4.2 on. A missing patch is the minor's first
    /// release.
    pub fn parse(value: &str) -> Option<Self> {
        if value == "any" {
            return Some(Self::Any);
        }
        let mut parts = value.split('.').map(|part| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u16>().ok())
                .flatten()
        });
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().unwrap_or(Some(0))?;
        let known = (major, minor) >= Self::OLDEST;
        (parts.next().is_none() && known).then_some(Self::Release {
            major,
            minor,
            patch,
        })
    }
}

impl std::fmt::Display for RedmineVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Release {
                major,
                minor,
                patch,
            } => write!(f, "{major}.{minor}.{patch}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(RedmineVersion::parse("any"), Some(RedmineVersion::Any));
        assert_eq!(
            RedmineVersion::parse("5.0.4"),
            Some(RedmineVersion::Release {
                major: 5,
                minor: 0,
                patch: 4
            })
        );
        assert_eq!(
            RedmineVersion::parse("6.1").unwrap().to_string(),
            "6.1.0".to_owned()
        );
        for bad in [
            "",
            "5",
            "5.",
            "5.0.",
            "5.0.4.1",
            "v5.0",
            "5.x",
            "4.1",
            "3.4.6",
            "auto",
            "+6.1",
            "6.1.99999",
        ] {
            assert_eq!(RedmineVersion::parse(bad), None, "{bad}");
        }
    }
}
