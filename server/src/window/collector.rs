//! Copies of an attachment's event-locked windows for a live calibration, labelled by marker code.

use myelin_proto::v1 as pb;

pub struct Collector {
    pub target_codes: Vec<i32>,
    pub non_target_codes: Vec<i32>,
    /// (filtered window at the stream rate, is target); bounded, never waited on.
    pub sender: tokio::sync::mpsc::Sender<(Vec<f32>, bool)>,
}

impl Collector {
    pub fn offer(&self, window: &[f32], trigger: &pb::Marker) {
        let label = if self.target_codes.contains(&trigger.code) {
            true
        } else if self.non_target_codes.contains(&trigger.code) {
            false
        } else {
            return;
        };
        let _ = self.sender.try_send((window.to_vec(), label));
    }
}
