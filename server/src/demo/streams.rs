//! The embedded default's three streams: what each replays, how it is attached, and the truth
//! each prediction line is checked against. The recordings are built into the binary.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use flate2::read::GzDecoder;
use myelin_client::proto as pb;
use myelin_client::recording::Recording;

use crate::config::DemoConfig;

/// What the line of a prediction adds: the truth the stream was made with.
pub type Truth = Box<dyn Fn(&pb::Prediction) -> String + Send>;

/// subject 1, session 2, first run (held out from the bundled model's training data).
const MUSE: &[u8] = include_bytes!("../../../models/data/p300/subject1_session2_2017-02-09-17.13.56.csv.gz");
const MUSE_NAME: &str = "eeg-notebooks P300 subject1 session2 (Muse, 256 Hz, real)";
/// models/demo/make_demo.py made these (synthetic; seeds and items the models never saw).
const SEEG: &[u8] = include_bytes!("../../../models/demo/seeg-synthetic.npy.gz");
const SEEG_EVENTS: &str = include_str!("../../../models/demo/seeg-synthetic.events.csv");
const MEG: &[u8] = include_bytes!("../../../models/demo/meg-synthetic.npy.gz");
const MEG_EVENTS: &str = include_str!("../../../models/demo/meg-synthetic.events.csv");
const GALLERY: &[u8] = include_bytes!("../../../models/demo/meg-gallery.npy");
const GALLERY_IDS: &str = include_str!("../../../models/demo/meg-gallery.npy.ids");
const CTF275: &str = include_str!("../../../models/meg/ctf275_layout.json");
/// The gallery's first image (make_demo.py: images 1600-1699).
const FIRST_IMAGE: usize = 1600;
/// Where the MEG demo's gallery goes, under models.galleries_dir (Attach reads galleries there).
const GALLERY_PATH: &str = "demo/meg-gallery.npy";

pub struct DemoStream {
    pub description: String,
    pub header: pb::StreamHeader,
    pub recording: Recording,
    pub attach: pb::AttachRequest,
    pub chunk: usize,
    pub truth: Truth,
}

fn event_locked(codes: Vec<i32>) -> Option<pb::WindowPolicy> {
    Some(pb::WindowPolicy {
        policy: Some(pb::window_policy::Policy::EventLocked(pb::EventLockedWindow { marker_codes: codes, tmin_s: 0.0, tmax_s: 0.0 })),
    })
}

pub fn muse(config: &DemoConfig) -> anyhow::Result<DemoStream> {
    let recording = Recording::from_csv(GzDecoder::new(MUSE)).map_err(|e| anyhow::anyhow!("bundled recording: {e}"))?;
    let header = recording.header("demo", MUSE_NAME);
    let attach = pb::AttachRequest {
        session_id: "demo".into(),
        model_id: config.model_id.clone(),
        window: event_locked(config.marker_codes.clone()),
        ..Default::default()
    };
    let truth: Truth = Box::new(|p| match p.trigger.as_ref().map(|m| m.code) {
        Some(2) => " (truth: target)".into(),
        Some(_) => " (truth: non-target)".into(),
        None => String::new(),
    });
    Ok(DemoStream { description: format!("replaying {MUSE_NAME}"), header, recording, attach, chunk: 8, truth })
}

pub fn seeg() -> anyhow::Result<DemoStream> {
    let (samples, channels) = read_f16(SEEG).context("the bundled sEEG stream")?;
    anyhow::ensure!(channels == 10, "the sEEG stream has {channels} channels, not 10");
    let labels: Vec<String> = (1..=channels).map(|i| format!("sEEG{i}")).collect();
    let recording = synthetic_recording(labels, 1000.0, samples, events(SEEG_EVENTS)?)?;
    let session = "demo-seeg-synthetic";
    let mut header = recording.header(session, "synthetic sEEG (models/duin/synthetic.py)");
    header.modality = pb::Modality::Seeg as i32;
    for channel in &mut header.channels {
        channel.r#type = "SEEG".into();
    }
    let attach = pb::AttachRequest {
        session_id: session.into(),
        model_id: "duin-synthetic".into(),
        subject: "s01".into(),
        top_k: 3,
        latency_budget_ms: 1000,
        window: event_locked((1..=61).collect()),
        ..Default::default()
    };
    // The marker code is the spoken word's number (1-based), in the model's label order.
    let truth: Truth = Box::new(|p| {
        let code = p.trigger.as_ref().map_or(0, |m| m.code);
        let labels = match &p.result {
            Some(pb::prediction::Result::Classification(c)) => &c.labels,
            _ => return String::new(),
        };
        usize::try_from(code - 1).ok().and_then(|i| labels.get(i)).map_or(String::new(), |word| format!(" (truth: {word})"))
    });
    let description = "replaying SYNTHETIC sEEG (10 contacts, 1 kHz, a spoken word every ~3.6 s)".into();
    Ok(DemoStream { description, header, recording, attach, chunk: 50, truth })
}

pub fn meg(galleries_dir: &Path) -> anyhow::Result<DemoStream> {
    install_gallery(galleries_dir)?;
    let layout: serde_json::Value = serde_json::from_str(CTF275).context("the CTF-275 layout")?;
    let names: Vec<String> = serde_json::from_value(layout["names"].clone()).context("CTF-275 layout names")?;
    let positions: Vec<[f64; 2]> = serde_json::from_value(layout["positions"].clone()).context("CTF-275 layout positions")?;
    let (samples, channels) = read_f16(MEG).context("the bundled MEG stream")?;
    anyhow::ensure!(
        channels == names.len() && channels == positions.len(),
        "the MEG stream has {channels} channels, the layout {}",
        names.len()
    );
    let shown = events(MEG_EVENTS)?;
    let ids: Vec<String> = GALLERY_IDS.lines().map(str::to_string).collect();
    let truths: Vec<String> =
        shown.iter().map(|&(_, image)| ids.get((image as usize).wrapping_sub(FIRST_IMAGE)).cloned().unwrap_or_default()).collect();
    let onsets = shown.iter().map(|&(onset, _)| (onset, 1)).collect();
    let recording = synthetic_recording(names.clone(), 120.0, samples, onsets)?;
    let session = "demo-meg-synthetic";
    let mut header = recording.header(session, "synthetic CTF-275 MEG (models/meg/simulator.py)");
    header.modality = pb::Modality::Meg as i32;
    for (channel, [x, y]) in header.channels.iter_mut().zip(positions) {
        channel.r#type = "MEG".into();
        channel.unit = "femtotesla".into();
        channel.layout = Some(pb::LayoutPosition { x, y });
    }
    let attach = pb::AttachRequest {
        session_id: session.into(),
        model_id: "meg-brain-synthetic".into(),
        gallery: Some(pb::GallerySpec { path: GALLERY_PATH.into(), index: pb::GalleryIndex::Exact as i32 }),
        top_k: 3,
        latency_budget_ms: 1000,
        window: event_locked(vec![1]),
        ..Default::default()
    };
    // One window per image onset, in order: the k-th prediction of a pass is the k-th image.
    let truth: Truth = Box::new(move |p| format!(" (truth: {})", truths[p.sequence as usize % truths.len()]));
    let description = "replaying SYNTHETIC CTF-275 MEG (275 sensors, 120 Hz, an image every ~1.6 s; 100-image gallery)".into();
    Ok(DemoStream { description, header, recording, attach, chunk: 6, truth })
}

/// Puts the bundled gallery where Attach reads galleries, unless an identical one is there.
fn install_gallery(galleries_dir: &Path) -> anyhow::Result<()> {
    let path = galleries_dir.join(GALLERY_PATH);
    let ids = path.with_extension("npy.ids");
    if std::fs::read(&path).is_ok_and(|b| b == GALLERY) && std::fs::read_to_string(&ids).is_ok_and(|t| t == GALLERY_IDS) {
        return Ok(());
    }
    let dir = path.parent().expect("a gallery path has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, GALLERY).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(&ids, GALLERY_IDS).with_context(|| format!("writing {}", ids.display()))?;
    Ok(())
}

/// A gzipped .npy of float16 [n, channels]: the values as f32, row-major, and the channel count.
fn read_f16(gz: &[u8]) -> anyhow::Result<(Vec<f32>, usize)> {
    let mut bytes = Vec::new();
    GzDecoder::new(gz).read_to_end(&mut bytes)?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let shape = npy.shape().to_vec();
    anyhow::ensure!(shape.len() == 2, "expected a [samples, channels] array, got shape {shape:?}");
    let values: Vec<half::f16> = npy.into_vec()?;
    Ok((values.into_iter().map(f32::from).collect(), shape[1] as usize))
}

/// `onset sample, value` lines.
fn events(csv: &str) -> anyhow::Result<Vec<(usize, i32)>> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (onset, value) = line.split_once(',').with_context(|| format!("event line {line:?}"))?;
            Ok((onset.trim().parse()?, value.trim().parse()?))
        })
        .collect()
}

fn synthetic_recording(channels: Vec<String>, rate_hz: f64, samples: Vec<f32>, markers: Vec<(usize, i32)>) -> anyhow::Result<Recording> {
    let n = samples.len() / channels.len();
    anyhow::ensure!(markers.iter().all(|&(i, _)| i < n), "an event lies beyond the stream's {n} samples");
    let timestamps = (0..n).map(|i| i as f64 / rate_hz).collect();
    Ok(Recording { channels, rate_hz, timestamps, samples, markers })
}
