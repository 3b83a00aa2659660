//! An LSL stream's timeline: its timestamps put on this machine's LSL clock and kept
//! plausible, and where each pulled chunk goes in the session's sample indices (after a gap when
//! the source was lost).

use myelin_proto::v1 as pb;

use crate::session::warnings::Warnings;

/// What the inlet thread knows of the stream it feeds: where the next sample goes.
pub struct Position {
    pub next_index: u64,
    pub last_ts: Option<f64>,
}

/// Puts a pulled chunk's timestamps on this machine's LSL clock (`offset`), never going back
/// from the last one (a smaller new offset estimate is measurement jitter, and the session would
/// refuse it). A timestamp that cannot be right (not finite, or more than [`MAX_GAP_S`] from the
/// one before it) becomes the one before it plus a sample period (a stream's first, if not
/// finite, this machine's clock `now`), with a warning: kept, one bogus value would hold every
/// later timestamp at it, since they may not go back. A clock that really jumped forward by more
/// than that is followed once a second of samples has kept to its new time (`jump`). A stream's
/// first finite timestamp is taken as it is: some sources stamp samples and markers with Unix
/// time, consistently.
#[allow(clippy::too_many_arguments)]
pub fn correct_timestamps(
    stamps: &mut [f64],
    offset: f64,
    last: Option<f64>,
    rate: f64,
    now: impl FnOnce() -> f64,
    jump: &mut Jump,
    warnings: &mut Warnings,
    first_index: u64,
) {
    let mut now = Some(now);
    let mut previous = last;
    let mut repaired = 0;
    for t in stamps.iter_mut() {
        let corrected = *t + offset;
        let near = corrected.is_finite() && previous.is_none_or(|p| (corrected - p).abs() <= MAX_GAP_S);
        let followed = !near && jump.keeps_to(corrected, previous, rate);
        *t = match (near || followed, previous) {
            (true, Some(p)) => corrected.max(p),
            (true, None) => corrected,
            (false, Some(p)) => p + 1.0 / rate,
            (false, None) => now.take().map_or(0.0, |now| now()),
        };
        if near {
            *jump = Jump::default();
        }
        repaired += u64::from(!near && !followed);
        previous = Some(*t);
    }
    if repaired > 0 {
        warnings.add(pb::IngestWarningKind::TimestampsRepaired, "timestamps_repaired", first_index, repaired, || {
            format!(
                "{repaired} timestamps from the LSL stream were not finite or more than a day off: each set one sample period after the one before"
            )
        });
    }
}

/// Timestamps a day or more ahead of the stream's, in a row: after a second's worth of them
/// the stream's clock is taken to have jumped, not to be sending bogus values.
#[derive(Debug, Default)]
pub struct Jump {
    run: u64,
    last: Option<f64>,
}

impl Jump {
    /// Whether `corrected`, far from `previous`, is to be followed.
    fn keeps_to(&mut self, corrected: f64, previous: Option<f64>, rate: f64) -> bool {
        let ahead = corrected.is_finite() && previous.is_some_and(|p| corrected > p + MAX_GAP_S);
        let continues = self.last.is_some_and(|l| (corrected - l).abs() <= MAX_GAP_S);
        self.run = if ahead && continues { self.run + 1 } else { u64::from(ahead) };
        self.last = ahead.then_some(corrected);
        self.run as f64 > rate
    }
}

/// Longest silence the LSL door counts as a gap of the stream (a source lost and back); a jump
/// of its timestamps beyond it is a clock jump or a bogus timestamp, and the samples follow on.
const MAX_GAP_S: f64 = 86_400.0;

/// The sample index of a chunk whose first timestamp is `first_ts`: right after the last chunk,
/// or after the samples its timestamps say are missing (a gap, more than 0.1 s of them), or,
/// for a jump beyond [`MAX_GAP_S`], right after the last chunk with a warning.
pub fn place_chunk(position: &Position, first_ts: f64, rate: f64, warnings: &mut Warnings) -> u64 {
    let Some(last) = position.last_ts else { return position.next_index };
    let missing = ((first_ts - last) * rate).round() - 1.0;
    if !(missing > (0.1 * rate).max(2.0)) {
        return position.next_index;
    }
    if missing > MAX_GAP_S * rate {
        let index = position.next_index;
        warnings.add(pb::IngestWarningKind::ClockJump, "clock_jump", index, 1, || {
            format!("LSL timestamps jumped by {:+.3} s, more than a day: taken for a clock jump, not a gap", first_ts - last)
        });
        return index;
    }
    position.next_index + missing as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_go_onto_this_clock_never_back_and_never_non_finite() {
        use super::{Jump, Warnings, correct_timestamps};
        let mut warnings = Warnings::default();
        // A smaller offset than last time (jitter) would take the first one back: held at the last.
        let mut stamps = [10.0, 10.01, f64::NAN, 10.03];
        correct_timestamps(&mut stamps, -0.005, Some(10.0), 100.0, || unreachable!(), &mut Jump::default(), &mut warnings, 7);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!(stamps[0], 10.0, "held at the last one");
        assert!(near(stamps[1], 10.005));
        assert!(near(stamps[2], 10.015), "the one before it plus a sample period: {stamps:?}");
        assert!(near(stamps[3], 10.025));
        let list = warnings.into_vec();
        assert_eq!((list.len(), list[0].sample_index, list[0].count), (1, 7, 1));
        // The very first timestamp of a stream, if not finite, is this machine's clock now.
        let mut first = [f64::INFINITY, 5.0];
        correct_timestamps(&mut first, 0.0, None, 100.0, || 4.5, &mut Jump::default(), &mut Warnings::default(), 0);
        assert_eq!(first, [4.5, 5.0]);
        // One bogus timestamp a century ahead does not hold every later one at it.
        let mut warnings = Warnings::default();
        let mut jumpy = [20.0, 3.2e9, 20.02, 1e300, 20.04];
        correct_timestamps(&mut jumpy, 0.0, Some(19.99), 100.0, || unreachable!(), &mut Jump::default(), &mut warnings, 0);
        assert!(jumpy.iter().zip([20.0, 20.01, 20.02, 20.03, 20.04]).all(|(a, b)| near(*a, b)), "{jumpy:?}");
        assert_eq!(warnings.into_vec()[0].count, 2);
        // A stream stamped in Unix time (its markers too) keeps its timestamps.
        let mut unix = [1.8e9, 1.8e9 + 0.01];
        correct_timestamps(&mut unix, 0.0, None, 100.0, || unreachable!(), &mut Jump::default(), &mut Warnings::default(), 0);
        assert_eq!(unix, [1.8e9, 1.8e9 + 0.01]);
        // A clock that jumped two days ahead for good is followed after a second of its samples.
        let mut jump = Jump::default();
        let mut warnings = Warnings::default();
        let mut later: Vec<f64> = (0..300).map(|i| 200_000.0 + i as f64 / 100.0).collect();
        correct_timestamps(&mut later, 0.0, Some(20.0), 100.0, || unreachable!(), &mut jump, &mut warnings, 0);
        assert!(near(later[0], 20.01) && near(later[99], 21.0), "repaired while it might be bogus");
        assert!(near(later[101], 200_001.01) && near(later[299], 200_002.99), "then followed");
        assert_eq!(warnings.into_vec()[0].count, 100);
    }

    #[test]
    fn a_jump_of_the_timestamps_is_a_gap_up_to_a_day_and_a_clock_jump_beyond() {
        use super::{Position, Warnings, place_chunk};
        let position = Position { next_index: 1000, last_ts: Some(100.0) };
        let mut warnings = Warnings::default();
        assert_eq!(place_chunk(&position, 100.01, 100.0, &mut warnings), 1000, "the next sample");
        assert_eq!(place_chunk(&position, 110.0, 100.0, &mut warnings), 1000 + 999, "10 s lost: a gap");
        assert!(warnings.is_empty());
        for bogus in [1e300, 100.0 + 2.0 * 86_400.0, f64::MAX] {
            assert_eq!(place_chunk(&position, bogus, 100.0, &mut warnings), 1000, "{bogus}: no gap of 10^300 samples");
        }
        assert_eq!(warnings.into_vec()[0].count, 3);
        assert_eq!(place_chunk(&Position { next_index: 0, last_ts: None }, 1e300, 100.0, &mut Warnings::default()), 0);
    }
}
