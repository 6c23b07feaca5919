//! The floor of `make bench`: how fast this API server creates Roles and
//! RoleBindings at all, sent by a minimal client with the operator's own
//! kube client, as a ServiceAccount (API priority and fairness exempts
//! admins, so an admin would measure a server no operator meets).
//!
//!   bench-floor --namespaces N --per-namespace K --concurrency 8,16,32,64
//!
//! Namespaces `bench-0001`… exist already. Each concurrency writes its own
//! share: K Roles and K RoleBindings per namespace with names of its own
//! (`floor-c<concurrency>-<k>`), Writer's rules in every Role, each binding
//! created once its Role is (as the operator does). Prints JSON: objects per
//! second at each concurrency, and the best.

use std::time::Instant;

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use teamaccess::access::tiers::{self, Tier};

#[derive(Parser)]
#[command(about = "Creates Roles and RoleBindings as fast as the API server takes them")]
struct Args {
    /// Namespaces bench-0001 to bench-N.
    #[arg(long)]
    namespaces: usize,
    /// Roles (and as many RoleBindings) per namespace, for each concurrency.
    #[arg(long, default_value_t = 1)]
    per_namespace: usize,
    /// Requests in flight at once; one pass per value.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
    concurrency: Vec<usize>,
}

const GROUP: &str = "11111111-2222-4333-8444-555555555555";

async fn pair(
    client: Client,
    ns: String,
    name: String,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> kube::Result<()> {
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    let pp = PostParams::default();
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(
            &pp,
            &Role {
                metadata: meta.clone(),
                rules: Some(rules),
            },
        )
        .await?;
    Api::<RoleBinding>::namespaced(client, &ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta,
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name,
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Group".into(),
                    name: GROUP.into(),
                    namespace: None,
                }]),
            },
        )
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = Client::try_default().await.unwrap_or_else(|e| {
        eprintln!("error: no client from KUBECONFIG: {e}");
        std::process::exit(1)
    });
    let rules = tiers::rules(Tier::Writer, &Default::default(), &[]);
    let mut passes = Vec::new();
    for &concurrency in &args.concurrency {
        let work: Vec<(String, String)> = (1..=args.namespaces)
            .flat_map(|i| {
                (0..args.per_namespace)
                    .map(move |k| (format!("bench-{i:04}"), format!("floor-c{concurrency}-{k}")))
            })
            .collect();
        let objects = 2 * work.len();
        let started = Instant::now();
        let result = futures::stream::iter(work)
            .map(|(ns, name)| pair(client.clone(), ns, name, rules.clone()))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        if let Err(e) = result {
            eprintln!("error: at concurrency {concurrency}: {e}");
            std::process::exit(1);
        }
        let rate = objects as f64 / seconds;
        eprintln!(
            "[floor] concurrency {concurrency}: {objects} objects in {seconds:.2} s, {rate:.0}/s"
        );
        passes.push(json!({"concurrency": concurrency, "objects": objects, "seconds": seconds, "objects_per_second": rate}));
    }
    let best = passes
        .iter()
        .max_by(|a, b| {
            a["objects_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["objects_per_second"].as_f64().unwrap_or(0.0))
        })
        .cloned();
    println!("{}", json!({"passes": passes, "best": best}));
}
