//! #18 item 4: the policy file is watched. A Kubernetes ConfigMap update (a new
//! timestamped folder, then the `..data` symlink renamed onto it) and an editor's save
//! (a temporary file renamed over the old one) both reload the policy with no signal
//! and no restart; an invalid file keeps the live policy; reports made while policies
//! are swapped each get one policy (classification, overrides and decision from the same
//! version); a duplicate keeps its first response whatever is live.
//!
//! Tests wait on `RunningServer::policy_status`, the reload's own notification, counting
//! the reloads themselves (see [`Reloads`]); the only timeout is a bound on a failure.

mod common;

use call_outcome::config::Config;
use call_outcome::proto as pb;
use call_outcome::server::RunningServer;
use call_outcome::server::reload::ReloadStatus;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// A bound on a reload that never comes (inotify delivers in milliseconds).
const RELOAD_BOUND: Duration = Duration::from_secs(20);

/// A policy whose decisions name `rule`, and whose override `ov` turns a 486 with the
/// label carrier=x into `category`.
fn policy(rule: &str, category: &str) -> String {
    format!(
        r#"
[[overrides]]
name = "ov-{rule}"
labels = {{ carrier = "x" }}
sip_code = [486]
category = "{category}"

[[rules]]
name = "{rule}"
action = "stop"
explanation = "{rule}"
"#
    )
}

/// A folder laid out as the kubelet lays out a ConfigMap volume:
/// `policy.toml -> ..data/policy.toml`, `..data -> ..<version>/`.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(text: &str) -> ConfigMapVolume {
        let dir = tempfile::tempdir().expect("dir");
        let mut volume = ConfigMapVolume { dir, generation: 0 };
        let first = volume.write_generation(text);
        symlink(&first, volume.dir.path().join("..data")).expect("..data");
        symlink("..data/policy.toml", volume.path()).expect("policy.toml");
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    fn write_generation(&mut self, text: &str) -> String {
        self.generation += 1;
        let name = format!("..2026_12_05_00_00_0{}.000000001", self.generation);
        let folder = self.dir.path().join(&name);
        std::fs::create_dir(&folder).expect("generation");
        std::fs::write(folder.join("policy.toml"), text).expect("write");
        name
    }

    /// What the kubelet does on an update: write, relink, rename, remove the old one.
    fn update(&mut self, text: &str) {
        let old = std::fs::read_link(self.dir.path().join("..data")).expect("..data");
        let new = self.write_generation(text);
        let tmp = self.dir.path().join("..data_tmp");
        symlink(&new, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap");
        std::fs::remove_dir_all(self.dir.path().join(old)).expect("old generation");
    }
}

async fn start(policy_file: &Path) -> RunningServer {
    common::start_with(Config {
        policy_file: Some(policy_file.to_owned()),
        ..Config::default()
    })
    .await
}

/// The reloads a test has waited for, counted from the server's start. The count is the
/// test's own, not a snapshot taken when it starts waiting: the watcher's first look at
/// the file (made once it is watching) may read a change the test has just made and apply
/// it before the event does; a snapshot taken after the change would then already include
/// that reload and wait for one that never comes.
struct Reloads {
    status: watch::Receiver<ReloadStatus>,
    seen: u64,
}

impl Reloads {
    /// Before the test changes the file: no reload has happened yet.
    fn of(server: &RunningServer) -> Reloads {
        let status = server.policy_status();
        let seen = {
            let s = status.borrow();
            s.applied + s.rejected
        };
        assert_eq!(seen, 0, "no reload before the file changes");
        Reloads { status, seen }
    }

    fn current(&self) -> ReloadStatus {
        self.status.borrow().clone()
    }

    /// Waits for the next reload (applied or rejected) and returns the status after it.
    async fn next(&mut self) -> ReloadStatus {
        let seen = self.seen;
        let status = tokio::time::timeout(
            RELOAD_BOUND,
            self.status.wait_for(|s| s.applied + s.rejected > seen),
        )
        .await
        .expect("the file change was seen")
        .expect("server running")
        .clone();
        self.seen = status.applied + status.rejected;
        status
    }
}

fn carrier_x_486(call_id: &str) -> pb::ReportOutcomeRequest {
    let mut outcome = common::outcome(call_id, 1, "+15550100123", 486);
    outcome.labels.insert("carrier".into(), "x".into());
    common::report(outcome)
}

#[tokio::test]
async fn a_configmap_symlink_swap_reloads_and_an_invalid_one_is_refused() {
    let mut volume = ConfigMapVolume::new(&policy("first", "no_answer"));
    let server = start(&volume.path()).await;
    let mut reloads = Reloads::of(&server);
    let mut client = common::client(&server).await;
    let first = client
        .report_outcome(carrier_x_486("swap-1"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(first.decision.as_ref().expect("decision").rule, "first");

    volume.update(&policy("second", "unavailable"));
    let reloaded = reloads.next().await;
    assert_eq!((reloaded.applied, reloaded.rejected), (1, 0));
    let second = client
        .report_outcome(carrier_x_486("swap-2"))
        .await
        .expect("report")
        .into_inner();
    let decision = second.decision.expect("decision");
    assert_eq!(decision.rule, "second");
    assert_eq!(decision.policy_version, *reloaded.version);
    let classification = second.classification.expect("classification");
    assert_eq!(classification.override_name, "ov-second");
    assert_eq!(classification.category, pb::Category::Unavailable as i32);

    // An invalid policy arrives the same way: refused, located, the live one stays.
    volume.update("[[rules]]\nname = \"broken\"\naction = \"teleport\"\nexplanation = \"x\"\n");
    let refused = reloads.next().await;
    assert_eq!((refused.applied, refused.rejected), (1, 1));
    let error = refused.last_error.expect("the error");
    assert!(
        error.contains("policy.toml:3:10: unknown action `teleport`"),
        "{error}"
    );
    assert_eq!(refused.version, reloaded.version, "the live policy stays");
    let third = client
        .report_outcome(carrier_x_486("swap-3"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(third.decision.expect("decision").rule, "second");

    // A duplicate of the first report still gets its first response, byte for byte.
    let again = client
        .report_outcome(carrier_x_486("swap-1"))
        .await
        .expect("report")
        .into_inner();
    assert!(again.duplicate);
    let mut first_again = first.clone();
    first_again.duplicate = true;
    assert_eq!(
        prost::Message::encode_to_vec(&again),
        prost::Message::encode_to_vec(&first_again)
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn an_editors_rename_over_the_file_reloads() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy("first", "no_answer")).expect("write");
    let server = start(&path).await;
    let mut reloads = Reloads::of(&server);
    // Unrelated files in the folder are read past, not counted as reloads.
    std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
    // How editors save: a temporary file, renamed over the old one.
    let tmp = dir.path().join(".policy.toml.swp");
    std::fs::write(&tmp, policy("saved", "no_answer")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    let reloaded = reloads.next().await;
    assert_eq!((reloaded.applied, reloaded.rejected), (1, 0));
    let mut client = common::client(&server).await;
    let response = client
        .report_outcome(carrier_x_486("edit-1"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(response.decision.expect("decision").rule, "saved");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn watching_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy("first", "no_answer")).expect("write");
    // Two servers on the same file, one watching: the watching one's reload says the
    // change was there to be seen.
    let watching = start(&path).await;
    let blind = common::start_with(Config {
        policy_file: Some(path.clone()),
        policy_watch: false,
        ..Config::default()
    })
    .await;
    let blind_status = blind.policy_status();
    let mut watching_reloads = Reloads::of(&watching);
    let mut client = common::client(&blind).await;
    for (i, rule) in ["second", "third"].into_iter().enumerate() {
        let tmp = dir.path().join("policy.toml.tmp");
        std::fs::write(&tmp, policy(rule, "no_answer")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(watching_reloads.next().await.applied, i as u64 + 1);
        let response = client
            .report_outcome(carrier_x_486(&format!("off-{i}")))
            .await
            .expect("report")
            .into_inner();
        assert_eq!(response.decision.expect("decision").rule, "first");
    }
    assert!(!blind_status.has_changed().expect("running"));
    watching.stop().await.expect("stops");
    blind.stop().await.expect("stops");
}

/// Reports in flight while the policy is swapped back and forth: every response comes
/// from one policy, its classification (the override), its rule and its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_during_reloads_each_see_one_policy() {
    let a = policy("alpha", "no_answer");
    let b = policy("beta", "unavailable");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, &a).expect("write");
    let server = start(&path).await;
    let mut reloads = Reloads::of(&server);
    let version_a = reloads.current().version.to_string();

    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut client = common::client(&server).await;
        let stop = stop.clone();
        workers.spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let response = client
                    .report_outcome(carrier_x_486(&format!("w{worker}-{n}")))
                    .await
                    .expect("report")
                    .into_inner();
                let decision = response.decision.expect("decision");
                let classification = response.classification.expect("classification");
                seen.push((
                    decision.policy_version,
                    decision.rule,
                    classification.override_name,
                    classification.category,
                ));
            }
            seen
        });
    }
    let mut version_b = String::new();
    for swap in 0..10 {
        let text = if swap % 2 == 0 { &b } else { &a };
        let tmp = dir.path().join("policy.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        let s = reloads.next().await;
        assert_eq!(s.rejected, 0);
        if swap == 0 {
            version_b = s.version.to_string();
        }
    }
    stop.cancel();
    let mut by_version = std::collections::BTreeMap::<String, usize>::new();
    while let Some(seen) = workers.join_next().await {
        for (version, rule, override_name, category) in seen.expect("worker") {
            let expected = if version == version_a {
                ("alpha", "ov-alpha", pb::Category::NoAnswer)
            } else if version == version_b {
                ("beta", "ov-beta", pb::Category::Unavailable)
            } else {
                panic!("unknown version {version}")
            };
            assert_eq!(
                (rule.as_str(), override_name.as_str(), category),
                (expected.0, expected.1, expected.2 as i32),
                "version {version}"
            );
            *by_version.entry(version).or_default() += 1;
        }
    }
    assert_eq!(by_version.len(), 2, "both policies served: {by_version:?}");
    server.stop().await.expect("stops");
}
