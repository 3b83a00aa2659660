//! Online signal processing on the stream, configured per model card: causal IIR filtering
//! ([`sos::SosFilter`]) run continuously on every incoming sample of an attachment's channels, so
//! windows carry no edge transients and match offline filtering of the whole recording; filter
//! design for the stream's own rate from the card's specification ([`design`]); and resampling
//! of a cut window to the model's rate by any rational ratio ([`polyphase`]). The per-window
//! steps that follow (reference, baseline, scaling) turn a cut window into the model's input:
//! `decode::input`.

pub mod design;
pub mod polyphase;
pub mod robust;
pub mod sos;
