//! GPU execution providers are a configuration choice with a clear fallback: on a machine (or
//! an ONNX Runtime build) without CUDA, models load on CPU and one log line says why.

use myelin_e2e::{TestServer, myelin_bin, repo_root};

#[test]
fn unavailable_cuda_falls_back_to_cpu_with_one_log_line() {
    let output = std::process::Command::new(myelin_bin())
        .args(["models", "list"])
        .current_dir(repo_root())
        .env("MYELIN_MODELS__EXECUTION_PROVIDERS", "[\"cuda\", \"cpu\"]")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stdout.contains("(cuda,") {
        return; // a machine with a working CUDA provider: nothing to fall back from
    }
    assert!(stdout.lines().filter(|l| l.starts_with("ok ")).all(|l| l.contains("(cpu,")), "{stdout}");
    let warnings = stderr.lines().filter(|l| l.contains("GPU execution provider could not load")).count();
    assert_eq!(warnings, 1, "one line for all models:\n{stderr}");
    assert!(stderr.contains("cuda"), "{stderr}");
}

#[tokio::test]
async fn the_server_serves_on_cpu_when_cuda_is_configured_but_unavailable() {
    let server = TestServer::start(&[("MYELIN_MODELS__EXECUTION_PROVIDERS", "[\"cuda\", \"cpu\"]")]).await;
    let models = server.client().await.list_models().await.unwrap();
    assert!(!models.is_empty());
    for m in models {
        assert!(m.ready, "{m:?}");
        assert!(m.execution_provider == "cpu" || m.execution_provider == "cuda", "{m:?}");
    }
}
