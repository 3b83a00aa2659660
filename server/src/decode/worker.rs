//! A model's inference threads: each owns one backend and takes windows from the model's one
//! bounded queue, turns each into the model's input, runs it and publishes its prediction on the
//! window's attachment route.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use myelin_proto::v1::{self as pb, PredictionStatus};

use super::backend::Backend;
use super::job::{LoadedModel, WindowJob};
use super::result::{fill_result, search_gallery};
use crate::card::{ModelCard, OutputKind};
use crate::clock;
use crate::metrics as m;

/// Starts one inference thread per backend, all fed by one bounded queue of `queue_depth` windows.
pub fn start(card: ModelCard, provider: String, backends: Vec<Box<dyn Backend>>, queue_depth: usize) -> Arc<LoadedModel> {
    let (sender, receiver) = crossbeam_channel::bounded(queue_depth);
    let (stop, stopped) = crossbeam_channel::bounded(0);
    let loaded = Arc::new(LoadedModel::new(card, provider, sender, stop));
    for (worker, backend) in backends.into_iter().enumerate() {
        let (receiver, stopped) = (receiver.clone(), stopped.clone());
        let card = loaded.card.clone();
        let thread = std::thread::Builder::new()
            .name(format!("infer-{}-{worker}", card.id))
            .spawn(move || inference_loop(backend, card, receiver, stopped))
            .expect("spawning an inference thread");
        loaded.add_thread(thread);
    }
    loaded
}

/// One inference thread: takes windows from the model's queue until the queue closes or `stop`
/// does (shutdown: the windows still queued are published as SHED "shutdown").
fn inference_loop(mut backend: Box<dyn Backend>, card: ModelCard, queue: Receiver<WindowJob>, stop: Receiver<()>) {
    let mut scratch = Vec::new();
    let mut gallery_scores = Vec::new();
    let mut input = vec![0.0f32; card.channels.len() * card.window_samples()];
    loop {
        let job = crossbeam_channel::select! {
            recv(queue) -> job => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            recv(stop) -> _ => {
                for job in queue.try_iter() {
                    job.publish_undecoded(PredictionStatus::Shed, "shutdown".into());
                }
                return;
            }
        };
        m::queue_depth(&card.id, queue.len());
        let decode_start = clock::now_ns();
        let budget_ns = u64::from(job.attachment.budget_ms) * 1_000_000;
        if job.attachment.late_policy == pb::LatePolicy::Drop && decode_start.saturating_sub(job.last_sample_received_ns) > budget_ns {
            // Already past its budget and nobody wants late results: skip the work, count it.
            job.publish_undecoded(PredictionStatus::Late, String::new());
            continue;
        }
        let mut prediction = job.prediction(PredictionStatus::Ok, String::new());
        let WindowJob { attachment, data, enqueued_ns, in_flight, .. } = job;
        attachment.preprocessor.run(&data, &mut scratch, &mut input);
        attachment.buffers.give_back(data);
        let outcome = backend.infer(&input, attachment.sensors.as_deref()).and_then(|(output, embedding)| {
            let retrieval = match (&attachment.gallery, card.output.kind) {
                (Some(gallery), OutputKind::Embedding) if output.len() != gallery.dim => {
                    return Err(format!("embedding of {} values for a gallery of dimension {}", output.len(), gallery.dim));
                }
                (Some(gallery), OutputKind::Embedding) => Some(search_gallery(gallery, &output, attachment.top_k, &mut gallery_scores)),
                _ => None,
            };
            Ok((output, embedding, retrieval))
        });
        let decode_end = clock::now_ns();
        if let Some(timing) = prediction.timing.as_mut() {
            timing.decode_start_ns = decode_start;
            timing.decode_end_ns = decode_end;
        }
        m::observe_decode(&card.id, decode_start.saturating_sub(enqueued_ns), decode_end - decode_start);
        match outcome {
            Ok((output, embedding, Some(retrieval))) => {
                prediction.result = Some(pb::prediction::Result::Retrieval(retrieval));
                if attachment.include_embedding {
                    prediction.embedding = output;
                }
                if !embedding.is_empty() {
                    prediction.embedding = embedding;
                }
            }
            Ok((output, embedding, None)) => {
                fill_result(&mut prediction, &card, output, attachment.top_k);
                if !embedding.is_empty() {
                    prediction.embedding = embedding;
                }
            }
            Err(reason) => {
                tracing::warn!(model = %card.id, %reason, "inference failed");
                prediction.status = PredictionStatus::Error as i32;
                prediction.error_reason = format!("inference failed: {reason}");
            }
        }
        attachment.route.publish(prediction, attachment.late_policy);
        drop(in_flight);
    }
}
