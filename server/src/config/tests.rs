//! The configuration's own checks: the documented example, and refusals by name.

use super::*;

#[test]
fn the_documented_example_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/myelin.example.toml");
    let example: Config = Figment::from(Toml::file(&path)).extract().expect("example config parses");
    let defaults = Config::default();
    assert_eq!(toml::to_string(&example).unwrap(), toml::to_string(&defaults).unwrap());
}

#[test]
fn queue_sizes_out_of_range_are_refused_by_name() {
    for (section, key, value) in
        [("sessions", "worker_queue", 0u64), ("sessions", "worker_queue", 1 << 40), ("publish", "subscriber_queue", 1 << 21)]
    {
        let mut config = Config::default();
        match (section, key) {
            ("sessions", _) => config.sessions.worker_queue = value as usize,
            _ => config.publish.subscriber_queue = value as usize,
        }
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(&format!("{section}.{key}")) && error.contains(&value.to_string()), "{error}");
    }
    assert!(Config::default().validate().is_ok());
}

#[test]
fn scheduler_settings_out_of_range_are_refused_by_name() {
    for key in ["workers_per_model", "max_batch_delay_us", "inline_below_us"] {
        let mut config = Config::default();
        match key {
            "workers_per_model" => config.models.workers_per_model = 65,
            "max_batch_delay_us" => config.models.max_batch_delay_us = 1_000_001,
            _ => config.models.inline_below_us = u64::MAX,
        }
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(&format!("models.{key}")), "{error}");
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let error = Figment::from(Toml::string("[server]\ngrpc_adr = \"127.0.0.1:1\"")).extract::<Config>().unwrap_err();
    assert!(error.to_string().contains("grpc_adr"), "{error}");
}

/// A config file of deploy/ over the defaults, validated.
fn deploy_config(file: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file);
    let config: Config = Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(&path)).extract().expect(file);
    config.validate().expect(file);
    config
}

#[test]
fn the_secured_example_serves_public_addresses_with_tls_and_tokens() {
    let secure = deploy_config("myelin.secure.example.toml");
    assert!(secure.tls.enabled() && secure.auth.enabled() && !secure.auth.metrics_open);
    assert!(!secure.server.grpc_addr.ip().is_loopback() && !secure.server.allow_insecure_public);
    assert!(!secure.check_public_binding().expect("secure enough to serve 0.0.0.0"));
}

#[test]
fn the_kubernetes_config_is_valid_and_secure_enough_for_a_pod_address() {
    let config = deploy_config("k8s/myelin.toml");
    assert!(!config.server.allow_insecure_public);
    assert!(!config.check_public_binding().expect("TLS and authentication on"));
}

#[test]
fn a_misspelled_log_format_is_refused_not_taken_for_pretty() {
    let load = |text: &str| {
        Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)).extract::<Config>().map_err(|e| e.to_string())
    };
    assert_eq!(load("[server]\nlog_format = \"json\"").unwrap().server.log_format, LogFormat::Json);
    let error = load("[server]\nlog_format = \"jsn\"").unwrap_err();
    assert!(error.contains("jsn") && error.contains("pretty") && error.contains("json"), "{error}");
}

#[test]
fn quotas_of_zero_or_beyond_reason_are_refused_by_name() {
    for key in ["sessions_per_principal", "subscribers_per_principal", "calibrations_per_principal", "unauthenticated_calls"] {
        for value in [0usize, usize::MAX] {
            let mut config = Config::default();
            match key {
                "sessions_per_principal" => config.limits.sessions_per_principal = value,
                "subscribers_per_principal" => config.limits.subscribers_per_principal = value,
                "calibrations_per_principal" => config.limits.calibrations_per_principal = value,
                _ => config.limits.unauthenticated_calls = value,
            }
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(&format!("limits.{key}")), "{error}");
        }
    }
}
