//! Ingest warnings, at most one per kind per reply: the first occurrence's sample index and
//! message, and how many there were in all, so that a reply stays small whatever the input
//! (100,000 markers that cannot be placed are one warning, not 100,000).

use myelin_proto::v1::{self as pb, IngestWarningKind};

use crate::metrics as m;

#[derive(Debug, Default)]
pub struct Warnings {
    list: Vec<pb::IngestWarning>,
}

impl Warnings {
    /// `count` occurrences of `kind` (counted in `myelin_ingest_warnings_total{kind=label}`),
    /// the first at `sample_index`.
    pub fn add(&mut self, kind: IngestWarningKind, label: &'static str, sample_index: u64, count: u64, message: impl FnOnce() -> String) {
        m::warnings(label, count);
        match self.list.iter_mut().find(|w| w.kind == kind as i32) {
            Some(first) => first.count = first.count.saturating_add(count),
            None => self.list.push(pb::IngestWarning { kind: kind as i32, message: message(), sample_index, count }),
        }
    }

    pub fn extend(&mut self, other: Warnings) {
        for warning in other.list {
            if !self.counted_in(&warning) {
                self.list.push(warning);
            }
        }
    }

    /// Adds `other`'s warnings to these (counts summed per kind), leaving `other` as it is.
    pub fn merge(&mut self, other: &Warnings) {
        for warning in &other.list {
            if !self.counted_in(warning) {
                self.list.push(warning.clone());
            }
        }
    }

    /// Adds `warning`'s count to the first of its kind, if there is one.
    fn counted_in(&mut self, warning: &pb::IngestWarning) -> bool {
        let first = self.list.iter_mut().find(|w| w.kind == warning.kind);
        first.map(|first| first.count = first.count.saturating_add(warning.count)).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &pb::IngestWarning> {
        self.list.iter()
    }

    /// For the reply.
    pub fn into_vec(self) -> Vec<pb::IngestWarning> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_kind_with_the_first_index_and_the_total_count() {
        let mut warnings = Warnings::default();
        for i in 0..100_000u64 {
            warnings.add(IngestWarningKind::MarkerOutsideBuffer, "marker_outside_buffer", i, 1, || format!("marker {i}"));
        }
        warnings.add(IngestWarningKind::Gap, "gap", 7, 3, || "gap".into());
        let list = warnings.into_vec();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].sample_index, list[0].count, list[0].message.as_str()), (0, 100_000, "marker 0"));
        assert_eq!(list[1].count, 3);
    }
}
