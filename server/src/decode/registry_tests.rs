//! Claims of calibrated model ids: decided at once, unique versions, one owner.

use super::*;
use crate::config::Scope;

fn empty_registry() -> (Arc<ModelRegistry>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("myelin-claims-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = ModelsConfig { dir: dir.clone(), calibrations_dir: dir.join("calibrations"), ..ModelsConfig::default() };
    (Arc::new(ModelRegistry::load(&config).expect("an empty registry loads")), dir)
}

#[test]
fn one_principal_claims_a_new_id_and_every_claim_gets_its_own_version() {
    let (registry, dir) = empty_registry();
    let (a, b) = (Principal::new("rig-a", &[Scope::Decode], &[]), Principal::new("rig-b", &[Scope::Decode], &[]));
    let first = registry.claim_calibrated("shared", &a).unwrap();
    // rig-b loses the race while rig-a's fit is still being saved and registered.
    assert!(matches!(registry.claim_calibrated("shared", &b), Err(ClaimError::NotOwner { owner, .. }) if owner == "rig-a"));
    assert!(registry.may_calibrate("shared", &b).is_err());
    // The same principal may fit again at the same moment: another version, never the same.
    let versions: Vec<String> = (0..5).map(|_| registry.claim_calibrated("shared", &a).unwrap().version.clone()).collect();
    let second = registry.claim_calibrated("shared", &a).unwrap();
    assert_ne!(first.version, second.version);
    assert!(versions.iter().all(|v| *v != first.version), "{versions:?} vs {}", first.version);
    // An admin may add versions to anyone's id; once the claims are gone, the id is free again.
    assert!(registry.claim_calibrated("shared", &Principal::new("ops", &[Scope::Admin], &[])).is_ok());
    drop((first, second));
    assert!(registry.claim_calibrated("shared", &b).is_ok(), "nothing registered, nothing claimed: free");
    std::fs::remove_dir_all(dir).unwrap();
}
