//! `myelin-test-certs DIR [CLIENT_CN...]`: the TLS tests' certificates (see `myelin_e2e::certs`),
//! for the Python tests, which take them from here rather than from any download.
#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| anyhow::anyhow!("usage: myelin-test-certs DIR [CLIENT_CN...]"))?;
    let clients: Vec<String> = args.collect();
    let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
    let made = myelin_e2e::certs::make(std::path::Path::new(&dir), &clients)?;
    println!("{}", made.dir.display());
    Ok(())
}
