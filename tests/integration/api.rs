//! The API server enforces the TeamAccess contract at apply time.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use teamaccess::api::validate::cases;

use crate::operator::{CRD_NAME, install_crd};
use crate::support::{self, Cluster};

fn teamaccess_api(cluster: &Cluster) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("teamaccess.dev", "v1alpha1", "TeamAccess"),
        "teamaccesses",
    );
    Api::all_with(cluster.client.clone(), &ar)
}

/// Server-side apply with strict field validation, as `kubectl apply` does.
async fn apply(cluster: &Cluster, object: &Value) -> Result<(), String> {
    let name = object["metadata"]["name"].as_str().unwrap();
    teamaccess_api(cluster)
        .patch(
            name,
            &PatchParams::apply("teamaccess-tests").validation_strict(),
            &Patch::Apply(object),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn every_sample_applies() {
    let cluster = support::cluster().await;
    install_crd(&cluster).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
    let mut applied = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            if doc["kind"] != "TeamAccess" {
                continue;
            }
            let mut doc = doc;
            // a name of the test's own, so the samples never meet a running operator's
            let name = support::unique(&format!(
                "sample-{}",
                doc["metadata"]["name"].as_str().unwrap()
            ));
            doc["metadata"]["name"] = json!(name);
            apply(&cluster, &doc)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            applied += 1;
        }
    }
    assert!(
        applied >= 3,
        "the samples hold at least three TeamAccess objects"
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_naming_their_field() {
    let cluster = support::cluster().await;
    install_crd(&cluster).await;
    let all = cases::invalid();
    assert!(all.len() >= 14);
    for case in all {
        let object = json!({
            "apiVersion": "teamaccess.dev/v1alpha1",
            "kind": "TeamAccess",
            "metadata": {"name": support::unique("invalid")},
            "spec": case.spec,
        });
        match apply(&cluster, &object).await {
            Ok(()) => panic!("{}: the API server accepted it", case.name),
            Err(message) => assert!(
                message.contains(case.field),
                "{}: the refusal should name {:?}: {message}",
                case.name,
                case.field
            ),
        }
    }
}

#[tokio::test]
async fn printer_columns_are_served() {
    let cluster = support::cluster().await;
    install_crd(&cluster).await;
    let crd = Api::<CustomResourceDefinition>::all(cluster.client.clone())
        .get(CRD_NAME)
        .await
        .unwrap();
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    for want in ["Tiers", "Namespaces", "Ready", "Age"] {
        assert!(columns.iter().any(|c| c == want), "{want} in {columns:?}");
    }
}

/// kstatus (Flux) calls an object without status.observedGeneration current;
/// the CRD's status default makes a new TeamAccess read as behind instead,
/// until the operator has reconciled it.
#[tokio::test]
async fn a_new_teamaccess_reads_as_not_yet_observed() {
    let cluster = support::cluster().await;
    install_crd(&cluster).await;
    let name = support::unique("unobserved");
    let object = json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        // no operator selects this label, so nobody reconciles it
        "metadata": {"name": name, "labels": {"teamaccess-test/operator": "nobody"}},
        "spec": {"groups": [{"id": cases::GROUP}], "grants": [{"tier": "Reader", "namespaces": ["a"]}]},
    });
    apply(&cluster, &object).await.unwrap();
    let got = teamaccess_api(&cluster).get(&name).await.unwrap();
    assert_eq!(got.metadata.generation, Some(1));
    assert_eq!(
        got.data["status"],
        json!({"observedGeneration": 0}),
        "{:?}",
        got.data
    );
}
