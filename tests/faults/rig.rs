//! The rig itself is robust: a second `up` changes nothing, a failed `up`
//! leaves nothing running, `down` leaves nothing running even of a process
//! that does not answer SIGTERM, and a stopped component comes back with the
//! same command line and the same data.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

use crate::plane::{Component, ControlPlane, Signal, cmdline, fresh_dir, processes_of, script};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn up_on_a_running_control_plane_changes_nothing_and_down_leaves_no_process() {
    let plane = ControlPlane::up("rig-twice", "");
    let dir = plane.dir.to_str().unwrap();
    let before = processes_of(&plane.dir);
    assert_eq!(
        before.len(),
        3,
        "etcd, apiserver, controller-manager: {before:#?}"
    );
    let pids = std::fs::read_to_string(plane.dir.join("pids")).unwrap();

    let again = script(&["up", dir], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        plane.dir.join("env").display().to_string(),
        "it still prints the env file"
    );
    assert_eq!(
        processes_of(&plane.dir),
        before,
        "no second etcd or apiserver"
    );
    assert_eq!(
        std::fs::read_to_string(plane.dir.join("pids")).unwrap(),
        pids
    );

    // a controller-manager that ignores SIGTERM (stopped: the signal waits)
    // is SIGKILLed after the timeout
    let kcm = plane.pid(Component::KubeControllerManager);
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &kcm.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let down = script(&["down", dir], &[("TEAMACCESS_STOP_TIMEOUT", "2")]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(stderr(&down).contains("SIGKILL"), "{}", stderr(&down));
    assert_eq!(
        processes_of(&plane.dir),
        vec![],
        "down leaves nothing running"
    );
}

#[test]
fn a_failed_up_stops_everything_it_started() {
    let dir = fresh_dir("rig-failed");
    let out = script(
        &["up", dir.to_str().unwrap()],
        &[("TEAMACCESS_APISERVER_FLAGS", "--no-such-flag")],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "up must fail: {err}");
    assert!(
        err.contains("unknown flag: --no-such-flag"),
        "says why: {err}"
    );
    assert!(err.contains("stopping what it started"), "{err}");
    // etcd had started and was serving before the apiserver failed
    assert!(dir.join("cmd/etcd").exists());
    assert_eq!(processes_of(&dir), vec![], "no etcd left on the folder");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn stop_and_start_bring_each_component_back_with_its_flags_and_data() {
    let plane = ControlPlane::up("rig-restart", "");
    let cluster = plane.cluster().await;
    let cms = Api::<ConfigMap>::namespaced(cluster.client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("survives-restarts".into());
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();

    for component in Component::ALL {
        let pid = plane.pid(component);
        let argv = cmdline(pid);
        // etcd asked to stop, the others crashed: both come back the same
        let signal = match component {
            Component::Etcd => Signal::Term,
            _ => Signal::Kill,
        };
        plane.stop(component, signal);
        assert!(
            !processes_of(&plane.dir).iter().any(|(p, _)| *p == pid),
            "{} is gone",
            component.as_str()
        );
        plane.start(component);
        let new = plane.pid(component);
        assert_ne!(new, pid, "a new process");
        assert_eq!(
            cmdline(new),
            argv,
            "{} has the same flags",
            component.as_str()
        );
        assert_eq!(processes_of(&plane.dir).len(), 3);
        // the same data: the object written before, at its resourceVersion
        let read = cms.get("survives-restarts").await.unwrap();
        assert_eq!(read.metadata.uid, created.metadata.uid);
        assert_eq!(
            read.metadata.resource_version,
            created.metadata.resource_version
        );
    }
}
