//! Which tier answered: each lookup notes the dearest tier it reached, for the Check's span
//! and audit line.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

/// The tier that answered a lookup, from cheapest to dearest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    #[default]
    None,
    /// Refused by the API key filter (`store::KnownKeys`) without a lookup.
    Filter,
    L1,
    Redis,
    Db,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Filter => "filter",
            Self::L1 => "l1",
            Self::Redis => "redis",
            Self::Db => "db",
        }
    }
}

tokio::task_local! {
    static DEAREST_TIER: Cell<Tier>;
}

/// `work` with a slot for the dearest tier its lookups reach (for the span and audit line).
pub type TierTracked<F> = tokio::task::futures::TaskLocalFuture<Cell<Tier>, F>;

pub fn track_tier<F: Future>(work: F) -> TierTracked<F> {
    DEAREST_TIER.scope(Cell::new(Tier::None), work)
}

/// The dearest tier reached, read once `tracked` has finished (or panicked). A plain
/// function rather than an async wrapper, which would hold `work` twice over.
pub fn dearest_tier<F: Future>(tracked: Pin<&mut TierTracked<F>>) -> Tier {
    tracked.take_value().map_or(Tier::None, Cell::into_inner)
}

/// Notes that a lookup of the current Check reached `tier` (outside a tracked Check, nothing).
pub(super) fn reached(tier: Tier) {
    let _ = DEAREST_TIER.try_with(|dearest| dearest.set(dearest.get().max(tier)));
}
