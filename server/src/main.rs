//! `myelin`: the server binary.
//!
//! * `myelin` — embedded default: bundled models, a built-in replay of a real recording, live
//!   predictions printed here and on the metrics endpoint.
//! * `myelin serve --config FILE` — serve with a configuration file (see deploy/myelin.example.toml).
//! * `myelin models list` / `myelin models check CARD` — inspect and validate model cards offline.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use myelin_server::card;
use myelin_server::config::{Config, LogFormat, Scope};
use myelin_server::decode::{self, onnx};
use myelin_server::{demo, shutdown};

#[derive(Parser)]
#[command(name = "myelin", version, about = "Real-time BCI decoding server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (Ingest, Decoding, health, reflection) and HTTP (/metrics, /healthz).
    Serve {
        /// Configuration file (TOML); MYELIN_<SECTION>__<KEY> variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also run the built-in demo replay.
        #[arg(long)]
        demo: bool,
    },
    /// Replay a recording (XDF, or eeg-notebooks CSV) as LSL streams or into a server over gRPC,
    /// paced by its timestamps at real-time speed or xN.
    Replay {
        file: PathBuf,
        /// Speed factor (1 = real time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Send into this server's Ingest service instead of publishing on LSL.
        #[arg(long)]
        server: Option<String>,
        /// Session id when sending to a server (default: the file name).
        #[arg(long)]
        session: Option<String>,
        /// LSL stream name (default: the file name); markers go to "<name>-markers".
        #[arg(long)]
        name: Option<String>,
        /// Seconds to wait for an LSL consumer before starting.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        #[command(flatten)]
        credentials: myelin_client::CredentialArgs,
    },
    /// Make bearer tokens and their hashes for `[[auth.principals]]`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Inspect model cards.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Retrieval galleries.
    Gallery {
        #[command(subcommand)]
        command: GalleryCommand,
    },
}

#[derive(Subcommand)]
enum GalleryCommand {
    /// Build FILE's approximate (HNSW) search graph ahead of time and save it beside FILE
    /// (FILE.hnsw, FILE.hnsw.json), with progress shown.
    Build {
        file: PathBuf,
        /// Build threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A new random token for a principal: prints the token (once; give it to the client) on
    /// stdout and the principal's config entry, with only the token's salted hash, on stderr.
    New {
        /// The principal's name.
        name: String,
        /// Its scopes: ingest, decode, observe, admin (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "ingest,decode")]
        scopes: Vec<Scope>,
    },
    /// The salted hash of a token read from stdin (for a token made elsewhere).
    Hash,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Load every card of the configured model directory and report each model's state.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate one card and its ONNX file (names, shapes, warm-up run) without serving.
    Check {
        card: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print, as JSON, the filters and resampler the server designs from a card for a stream at
    /// `--rate` Hz: what Attach would use.
    Design {
        card: PathBuf,
        #[arg(long)]
        rate: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(None, true),
        Some(Command::Serve { config, demo }) => serve(config, demo),
        Some(Command::Models { command: ModelsCommand::List { config } }) => list_models(config),
        Some(Command::Replay { file, speed, server, session, name, wait, credentials }) => {
            replay_file(&file, speed, server.map(|s| (s, credentials.credentials())), session, name, wait)
        }
        Some(Command::Token { command }) => token(command),
        Some(Command::Models { command: ModelsCommand::Check { card, config } }) => check_card(&card, config),
        Some(Command::Models { command: ModelsCommand::Design { card, rate } }) => myelin_server::cli::design(&card, rate),
        Some(Command::Gallery { command: GalleryCommand::Build { file, threads } }) => myelin_server::cli::build_gallery(&file, threads),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("myelin: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// With a GPU provider asked for and the GPU build of ONNX Runtime installed, the CUDA libraries
/// from the nvidia-* wheels must be on the dynamic loader's path before ONNX Runtime loads its
/// CUDA provider; the loader reads LD_LIBRARY_PATH only at process start, so the server starts
/// itself again once with it set (nothing to set by hand).
fn with_gpu_libraries(providers: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    const MARK: &str = "MYELIN_GPU_LIBRARIES_SET";
    if !onnx::wants_gpu(providers) || std::env::var_os(MARK).is_some() {
        return Ok(());
    }
    let Ok(dirs) = std::fs::read_to_string(onnx::GPU_LIBRARY_PATH) else { return Ok(()) };
    let mut path = dirs.trim().to_string();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").and_then(|o| o.into_string().ok()).filter(|o| !o.is_empty()) {
        path = format!("{path}:{old}");
    }
    let exe = std::env::current_exe()?;
    let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("LD_LIBRARY_PATH", path).env(MARK, "1").exec();
    Err(anyhow::anyhow!("restarting with the CUDA libraries of {} on the library path: {error}", onnx::GPU_LIBRARY_PATH))
}

fn init_logging(format: LogFormat) {
    // The audit trail stays on whatever else RUST_LOG quietens, unless it names `audit` itself.
    let directives = std::env::var("RUST_LOG").ok().filter(|d| !d.trim().is_empty()).unwrap_or_else(|| "info,ort=warn".into());
    let directives = if directives.contains("audit") { directives } else { format!("{directives},audit=info") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info,ort=warn,audit=info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn serve(config_path: Option<PathBuf>, demo: bool) -> anyhow::Result<()> {
    let mut config = Config::load(config_path.as_deref())?;
    with_gpu_libraries(&config.models.execution_providers)?;
    config.demo.enabled |= demo;
    init_logging(config.server.log_format);
    let metrics = myelin_server::metrics::install(&config.cluster.replica)?;
    let grace = Duration::from_secs_f64(config.server.shutdown_grace_s);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("myelin-io").build()?;
    let served = runtime.block_on(async move {
        let (trigger, shutdown) = shutdown::channel();
        let signalled = trigger.clone();
        tokio::spawn(async move {
            let mut signals = Signals::new();
            signals.next().await;
            tracing::info!(grace_s = grace.as_secs_f64(), "shutdown requested");
            signalled.trigger();
            // The deadline: whatever still runs then is cut off.
            std::thread::spawn(move || {
                std::thread::sleep(grace);
                tracing::error!(grace_s = grace.as_secs_f64(), "shutdown did not finish within server.shutdown_grace_s: exiting now");
                std::process::exit(1);
            });
            signals.next().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        });
        let demo_config = config.demo.clone();
        let galleries_dir = config.models.galleries_dir.clone();
        let tls_on = config.tls.enabled();
        let demo_shutdown = shutdown.clone();
        myelin_server::server::serve(config, metrics, trigger, move |bound, gate| {
            // A stable line on stdout for scripts and tests: the addresses actually bound.
            println!("myelin ready grpc={} http={}", bound.grpc, bound.http);
            let scheme = if tls_on { "https" } else { "http" };
            println!("dashboard: {scheme}://{}/", bound.http);
            if demo_config.enabled {
                let token = match gate.enabled().then(|| gate.add_internal("demo", &[Scope::Ingest, Scope::Decode])).transpose() {
                    Ok(token) => token,
                    Err(error) => return tracing::error!(error = format!("{error:#}"), "built-in demo not started"),
                };
                tokio::spawn(async move {
                    if let Err(error) = demo::run(demo_config, bound.grpc, token, &galleries_dir, demo_shutdown).await {
                        tracing::error!(error = format!("{error:#}"), "built-in demo stopped");
                    }
                });
            }
        })
        .await
    });
    // Blocking tasks still running (an LSL resolve waiting out its timeout) are not waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    served
}

/// SIGTERM and Ctrl-C (SIGINT), as they come.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            terminate: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

fn replay_file(
    file: &std::path::Path,
    speed: f64,
    server: Option<(String, myelin_client::Credentials)>,
    session: Option<String>,
    name: Option<String>,
    wait: f64,
) -> anyhow::Result<()> {
    anyhow::ensure!(speed > 0.0, "--speed must be > 0");
    let recording = myelin_server::replay::load(file)?;
    let stem = myelin_client::recording::Recording::session_name(file);
    eprintln!(
        "{}: {} channels at {} Hz, {:.1} s, {} markers",
        file.display(),
        recording.channels.len(),
        recording.rate_hz,
        recording.duration_s(),
        recording.markers.len()
    );
    match server {
        Some((server, credentials)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let session = session.as_deref().unwrap_or(&stem);
            runtime.block_on(myelin_server::replay::to_server(&recording, &server, &credentials, session, speed))
        }
        None => {
            let lsl = myelin_lsl::Lsl::load(None)?;
            myelin_server::replay::to_lsl(&lsl, &recording, name.as_deref().unwrap_or(&stem), speed, wait)
        }
    }
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    use myelin_server::auth::token::{TokenHash, new_token};
    match command {
        TokenCommand::New { name, scopes } => {
            anyhow::ensure!(myelin_server::id::is_valid_id(&name), "the name must be {}", myelin_server::id::ID_RULE);
            let token = new_token()?;
            let scopes: Vec<String> = scopes.iter().map(|s| format!("{:?}", myelin_server::auth::scope_name(*s))).collect();
            println!("{token}");
            eprintln!(
                "# The token above is shown once: give it to the client (MYELIN_TOKEN). Add to the config:\n[[auth.principals]]\nname = {name:?}\nscopes = [{}]\ntoken_hashes = [\"{}\"]",
                scopes.join(", "),
                TokenHash::of(&token)?
            );
        }
        TokenCommand::Hash => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            anyhow::ensure!(!token.trim().is_empty(), "no token on stdin");
            println!("{}", TokenHash::of(token.trim())?);
        }
    }
    Ok(())
}

fn list_models(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    init_logging(config.server.log_format);
    let env = onnx::init_runtime(&config.models.onnxruntime_library, &config.models.execution_providers)?;
    let cards = card::model_cards(&config.models)?;
    if cards.is_empty() {
        println!("no model cards under {}", config.models.dir.display());
    }
    for path in cards {
        match card::ModelCard::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|c| decode::check_offline(&env, &c, &config.models.execution_providers).map(|p| (c, p)))
        {
            Ok((c, provider)) => println!(
                "ok    {} v{}  {}  {} ch @ {} Hz  window [{}, {}) s  data={}  ({}, {})",
                c.id,
                c.version,
                c.task.as_str(),
                c.channels.len(),
                c.sample_rate_hz,
                c.window.tmin_s,
                c.window.tmax_s,
                c.provenance.data_kind,
                provider,
                path.display()
            ),
            Err(error) => println!("FAIL  {}: {error:#}", path.display()),
        }
    }
    Ok(())
}

fn check_card(path: &std::path::Path, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    init_logging(config.server.log_format);
    let card = card::ModelCard::load(path)?;
    // Inside the repository, every file the provenance cites must exist (a card's claims are
    // only as good as the command and data they name).
    let repository = std::path::absolute(path)?
        .ancestors()
        .find(|d| d.join("Cargo.toml").exists() && d.join("models").is_dir())
        .map(|d| d.to_path_buf());
    if let Some(repository) = &repository {
        let missing = card.provenance.missing_citations(repository);
        anyhow::ensure!(missing.is_empty(), "{}: its provenance cites files that do not exist: {}", path.display(), missing.join(", "));
        let unknown = card.provenance.unknown_options(repository);
        anyhow::ensure!(
            unknown.is_empty(),
            "{}: its command passes options the script does not define: {}",
            path.display(),
            unknown.join(", ")
        );
    }
    let env = onnx::init_runtime(&config.models.onnxruntime_library, &config.models.execution_providers)?;
    let provider = decode::check_offline(&env, &card, &config.models.execution_providers)?;
    println!(
        "ok: {} v{} ({}) matches {} — input {} {:?}, output {} {:?}, warm-up passed on {provider}",
        card.id,
        card.version,
        path.display(),
        card.onnx_path().display(),
        card.input.name,
        card.input.shape,
        card.output.name,
        card.output.shape
    );
    Ok(())
}
