//! Dynamic batching must not change a single output: for every bundled ONNX model, the windows
//! of a batch (its card's largest, and an odd size) give what each gives alone, within 1e-5.
//! Windows are the model's golden inputs (computed outside the server), extended to a full batch
//! with scaled and shifted copies; models without golden vectors (fixtures, the linear ERP model)
//! get seeded noise. Spatial-attention models get each window's own sensor mask, so that a batch
//! mixing layouts is checked too.

use std::path::{Path, PathBuf};

use myelin_server::card::{self, ModelCard};
use myelin_server::decode::SensorInputs;
use myelin_server::decode::backend::{Backend, OnnxBackend};
use myelin_server::decode::onnx;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn flatten(value: &serde_json::Value, out: &mut Vec<f32>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().expect("a number") as f32),
        other => panic!("unexpected {other} in golden vectors"),
    }
}

/// Golden windows back to back, and their sensor positions and masks (spatial-attention models).
type GoldenWindows = (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>);

/// The model's golden input windows (and sensor feeds), if it has any.
fn golden_windows(card: &ModelCard) -> Option<GoldenWindows> {
    let path = card.card_path.to_str()?.replace(".card.toml", ".golden.json");
    let text = std::fs::read_to_string(path).ok()?;
    let golden: serde_json::Value = serde_json::from_str(&text).expect("golden JSON");
    let mut windows = Vec::new();
    if let Some(feeds) = golden.get("feeds") {
        flatten(&feeds[&card.input.name], &mut windows);
        let sensors = card.sensors.as_ref().expect("feeds are for spatial-attention models");
        let (mut positions, mut mask) = (Vec::new(), Vec::new());
        flatten(&feeds[&sensors.positions_input], &mut positions);
        flatten(&feeds[&sensors.mask_input], &mut mask);
        Some((windows, Some((positions, mask))))
    } else {
        flatten(&golden["inputs"], &mut windows);
        Some((windows, None))
    }
}

/// `n` windows: the golden ones, then copies scaled and shifted; or seeded noise.
fn batch_of(card: &ModelCard, n: usize) -> (Vec<f32>, Vec<Option<SensorInputs>>) {
    let per_window = card.channels.len() * card.window_samples();
    let c = card.channels.len();
    let (golden, sensors) = golden_windows(card).unwrap_or_default();
    let available = golden.len() / per_window;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let mut windows = Vec::with_capacity(n * per_window);
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        if available > 0 {
            let source = &golden[(i % available) * per_window..(i % available + 1) * per_window];
            let (scale, shift) = (1.0 + 0.1 * (i / available) as f32, 0.05 * (i / available) as f32);
            windows.extend(source.iter().map(|v| v * scale + shift));
        } else {
            windows.extend((0..per_window).map(|_| noise()));
        }
        rows.push(sensors.as_ref().map(|(positions, mask)| {
            let k = i % available.max(1);
            let mut mask = mask[k * c..(k + 1) * c].to_vec();
            // Every third window loses a different sensor.
            if i % 3 == 2 {
                mask[i % c] = 0.0;
            }
            SensorInputs { positions: positions[k * c * 2..(k + 1) * c * 2].to_vec(), mask }
        }));
    }
    (windows, rows)
}

#[test]
fn batched_outputs_equal_batch_one_for_every_bundled_onnx_model() {
    // MYELIN_TEST_PROVIDER=cuda (deploy/gpu-bench.sh): the same on the GPU build of ONNX Runtime.
    let provider = std::env::var("MYELIN_TEST_PROVIDER").unwrap_or_else(|_| "cpu".into());
    let runtime = repo().join(if provider == "cpu" { "runtime/libonnxruntime.so.1.31.1" } else { onnx::GPU_RUNTIME });
    let env = onnx::init_runtime(&runtime, &[]).expect("ONNX Runtime (deploy/setup.sh installs it; --gpu for the GPU build)");
    let mut checked = Vec::new();
    for path in card::find_cards(&repo().join("models")).expect("scanning models/") {
        let card = ModelCard::load(&path).expect("bundled card");
        if card.native.is_some() {
            continue;
        }
        let (session, used) = onnx::load(&env, &card, std::slice::from_ref(&provider), 1).expect("bundled model loads");
        assert_eq!(used, provider, "{}: the execution provider asked for did not load", card.id);
        let mut backend = OnnxBackend::new(session, card.clone());
        let per_window = card.channels.len() * card.window_samples();
        let max = card.input.max_batch;
        assert!(max > 1, "{}: every bundled ONNX model declares a batch size", card.id);
        let (windows, sensors) = batch_of(&card, max);
        let sensor_refs: Vec<Option<&SensorInputs>> = sensors.iter().map(Option::as_ref).collect();
        let alone: Vec<onnx::Outputs> = (0..max)
            .map(|i| backend.infer(&windows[i * per_window..(i + 1) * per_window], 1, &sensor_refs[i..i + 1]).expect("batch of one"))
            .collect();
        for size in [max, 3.min(max)] {
            let batched = backend.infer(&windows[..size * per_window], size, &sensor_refs[..size]).expect("batch");
            let width = batched.main.len() / size;
            let embedding_width = batched.embedding.len() / size;
            for (i, one) in alone.iter().take(size).enumerate() {
                for (name, got, want) in [
                    ("output", &batched.main[i * width..(i + 1) * width], &one.main[..]),
                    ("embedding", &batched.embedding[i * embedding_width..(i + 1) * embedding_width], &one.embedding[..]),
                ] {
                    assert_eq!(got.len(), want.len(), "{}: {name} width", card.id);
                    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(worst <= 1e-5, "{}: window {i} of a batch of {size}: {name} differs from batch 1 by {worst}", card.id);
                }
            }
        }
        checked.push(format!("{} (batch {max})", card.id));
    }
    assert!(checked.len() >= 13, "expected every bundled ONNX model, checked only {checked:?}");
    eprintln!("batched == batch 1 for {}", checked.join(", "));
}
