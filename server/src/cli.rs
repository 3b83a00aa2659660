//! Command-line tools of the `myelin` binary that are more than a call: `myelin models design`
//! (what Attach designs for a stream rate) and `myelin gallery build` (an HNSW graph ahead of
//! time, with progress).

use std::path::Path;

use crate::decode::gallery::index;

/// `myelin models design CARD --rate HZ`: the card's filters and resampler for that stream
/// rate, as JSON on stdout.
pub fn design(path: &Path, rate: f64) -> anyhow::Result<()> {
    let card = crate::card::ModelCard::load(path)?;
    println!("{}", crate::attach::window::design_report(&card, rate)?);
    Ok(())
}

/// `myelin gallery build`: the graph with its progress on stderr (a bar on a terminal, a line
/// every 5 % otherwise).
pub fn build_gallery(file: &Path, threads: Option<usize>) -> anyhow::Result<()> {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} items, {elapsed} elapsed, about {eta} left")?
            .progress_chars("=> "),
    );
    bar.set_message(format!("building the HNSW graph of {} on {threads} threads", file.display()));
    let last_line = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let progress = |added: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(added as u64);
        let percent = (added * 100).checked_div(total).unwrap_or(100);
        let shown = last_line.load(std::sync::atomic::Ordering::Relaxed);
        // usize::MAX: nothing printed yet, so the first call prints where the build starts.
        if bar.is_hidden() && (shown == usize::MAX || percent / 5 > shown / 5) {
            last_line.store(percent, std::sync::atomic::Ordering::Relaxed);
            eprintln!("built {percent} % ({added}/{total} items, {:.0} s)", bar.elapsed().as_secs_f64());
        }
    };
    let stamp = index::build_and_save(file, threads, &progress)?;
    bar.finish_and_clear();
    eprintln!(
        "saved {} ({} items, dimension {}, {:.1} s); Attach with the HNSW index loads it and refuses it once the gallery changes",
        index::index_path(file).display(),
        stamp.items,
        stamp.dim,
        stamp.build_seconds
    );
    Ok(())
}
