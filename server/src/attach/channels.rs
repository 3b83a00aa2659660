//! Which stream channel feeds each of a model's channels: an explicit mapping first, identical
//! labels otherwise; and, for spatial-attention models, each channel's layout position and
//! whether the stream has it.

use myelin_proto::v1 as pb;

use crate::card::{ModelCard, SensorsSpec};
use crate::decode::SensorInputs;
use crate::session::SessionError;
use crate::session::attachment::ABSENT;

pub struct ChannelMap {
    /// Stream channel index of each model channel ([`ABSENT`] for one the stream lacks).
    pub index: Vec<usize>,
    /// Model channels the stream lacks (spatial-attention models decode without them).
    pub missing: Vec<String>,
}

pub fn map_channels(card: &ModelCard, header: &pb::StreamHeader, channel_map: &[pb::ChannelMapping]) -> Result<ChannelMap, SessionError> {
    let invalid = SessionError::InvalidArgument;
    if channel_map.len() > card.channels.len() {
        return Err(invalid(format!(
            "channel_map: {} mappings for model {}'s {} channels",
            channel_map.len(),
            card.id,
            card.channels.len()
        )));
    }
    for mapping in channel_map {
        if !card.channels.contains(&mapping.model_channel) {
            return Err(invalid(format!(
                "channel_map: model {} has no channel {:?} (model channels: {:?})",
                card.id, mapping.model_channel, card.channels
            )));
        }
    }
    let stream_labels: Vec<&str> = header.channels.iter().map(|c| c.label.as_str()).collect();
    let optional_channels = card.sensors.as_ref().is_some_and(|s| s.optional);
    let mut index = Vec::with_capacity(card.channels.len());
    let mut missing = Vec::new();
    for model_channel in &card.channels {
        let mapping = channel_map.iter().find(|m| &m.model_channel == model_channel);
        let wanted = mapping.map_or(model_channel.as_str(), |m| m.stream_channel.as_str());
        match stream_labels.iter().position(|l| *l == wanted) {
            Some(i) => index.push(i),
            // A spatial-attention model decodes from the sensors it has; an explicit mapping to a
            // channel that does not exist is still an error.
            None if optional_channels && mapping.is_none() => {
                index.push(ABSENT);
                missing.push(model_channel.clone());
            }
            None => {
                return Err(invalid(format!(
                    "channel_map: stream {:?} has no channel {wanted:?} for model channel {model_channel:?} (stream channels: {stream_labels:?})",
                    header.session_id
                )));
            }
        }
    }
    Ok(ChannelMap { index, missing })
}

/// Positions and mask of a spatial-attention model's channels for this stream: the header's
/// layout position where the channel has one, the card's otherwise; mask 0 for absent channels.
pub fn sensor_inputs(
    card: &ModelCard,
    sensors: &SensorsSpec,
    header: &pb::StreamHeader,
    channel_index: &[usize],
) -> Result<SensorInputs, SessionError> {
    let present = channel_index.iter().filter(|&&i| i != ABSENT).count();
    let needed = sensors.min_present.max(1);
    if present < needed {
        return Err(SessionError::InvalidArgument(format!(
            "stream {:?} has {present} of model {}'s {} sensors; it needs at least {needed}",
            header.session_id,
            card.id,
            card.channels.len()
        )));
    }
    let mut positions = Vec::with_capacity(2 * channel_index.len());
    let mut mask = Vec::with_capacity(channel_index.len());
    for (slot, &index) in channel_index.iter().enumerate() {
        let [mut x, mut y] = sensors.positions[slot];
        if let Some(layout) = header.channels.get(index).and_then(|c| c.layout.as_ref()) {
            if !(layout.x.is_finite() && layout.y.is_finite()) {
                return Err(SessionError::InvalidArgument(format!(
                    "channel {:?}: layout position is not finite",
                    header.channels[index].label
                )));
            }
            (x, y) = (layout.x, layout.y);
        }
        positions.extend([x as f32, y as f32]);
        mask.push(if index == ABSENT { 0.0 } else { 1.0 });
    }
    Ok(SensorInputs { positions, mask })
}
