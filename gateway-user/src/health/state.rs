//! The probe state machine of one backend, without I/O: what a probe result does to its
//! state given the thresholds. The prober feeds it; `/backends` shows it.

use serde::Serialize;

/// What the probes say about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not probed yet: it gets traffic (a new backend is not refused before its first
    /// probe); the first probe result decides.
    Unknown,
    /// Passes its probe: gets new requests and tunnels.
    Healthy,
    /// Failed `unhealthy_threshold` probes in a row (or its first): gets nothing new until
    /// it passes `healthy_threshold` in a row.
    Unhealthy,
    /// Left the configuration on a reload. Final.
    Removed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Removed => "removed",
        }
    }

    /// Whether new requests and tunnels may go to a backend in this state.
    pub fn takes_traffic(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy)
    }

    pub(super) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(super) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Unknown,
            1 => Self::Healthy,
            2 => Self::Unhealthy,
            _ => Self::Removed,
        }
    }
}

/// The thresholds of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures in a row that take a healthy backend out.
    pub unhealthy: u32,
    /// Successes in a row that put an unhealthy backend back.
    pub healthy: u32,
}

/// Results in a row, of one kind: only the current streak matters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Streak {
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

/// The state after a probe that `passed` (or not), and the updated streak.
pub fn next(state: State, streak: Streak, passed: bool, thresholds: Thresholds) -> (State, Streak) {
    let streak = if passed {
        Streak {
            consecutive_successes: streak.consecutive_successes.saturating_add(1),
            consecutive_failures: 0,
        }
    } else {
        Streak {
            consecutive_successes: 0,
            consecutive_failures: streak.consecutive_failures.saturating_add(1),
        }
    };
    let state = match (state, passed) {
        (State::Removed, _) => State::Removed,
        (State::Unknown, true) => State::Healthy,
        (State::Unknown, false) => State::Unhealthy,
        (State::Healthy, false) if streak.consecutive_failures >= thresholds.unhealthy => {
            State::Unhealthy
        }
        (State::Unhealthy, true) if streak.consecutive_successes >= thresholds.healthy => {
            State::Healthy
        }
        (state, _) => state,
    };
    (state, streak)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE: Thresholds = Thresholds {
        unhealthy: 3,
        healthy: 2,
    };

    fn run(start: State, results: &[bool]) -> Vec<State> {
        let mut state = start;
        let mut streak = Streak::default();
        results
            .iter()
            .map(|&passed| {
                (state, streak) = next(state, streak, passed, AZURE);
                state
            })
            .collect()
    }

    use State::{Healthy as H, Removed as R, Unhealthy as U, Unknown};

    #[test]
    fn the_first_result_decides() {
        assert_eq!(run(Unknown, &[true]), [H]);
        assert_eq!(run(Unknown, &[false]), [U]);
    }

    #[test]
    fn thresholds_count_results_in_a_row() {
        // Two failures, a success, three failures: out on the third in a row.
        assert_eq!(
            run(H, &[false, false, true, false, false, false]),
            [H, H, H, H, H, U]
        );
        // Back after two successes in a row, not after one between failures.
        assert_eq!(run(U, &[true, false, true, true]), [U, U, U, H]);
    }

    #[test]
    fn removed_is_final() {
        assert_eq!(run(R, &[true, true, false]), [R, R, R]);
    }

    #[test]
    fn only_unknown_and_healthy_take_traffic() {
        assert!(Unknown.takes_traffic() && H.takes_traffic());
        assert!(!U.takes_traffic() && !R.takes_traffic());
        for state in [Unknown, H, U, R] {
            assert_eq!(State::from_u8(state.to_u8()), state);
        }
    }
}
