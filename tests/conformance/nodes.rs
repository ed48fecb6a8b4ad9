//! The Kubernetes backend on a cluster of two nodes (`REPOBOX_KUBE_NODES=2
//! scripts/kubernetes.sh up`, as `make kube-test` runs it): the cluster's scheduler
//! places sandboxes on both, and each is reached through the API server alone (the
//! server talks to nothing else).

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use reqwest::StatusCode;
use serde_json::json;

use crate::Kind;
use crate::harness::{app, config, git, simple_url};

/// The test cluster's client, from the kubeconfig the harness gives the server.
async fn cluster() -> kube::Client {
    let dir = tempfile::tempdir().unwrap();
    let path = config(Kind::Kubernetes, dir.path()).kubeconfig;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
#[ignore = "needs the two-node test cluster: make kube-test"]
async fn sandboxes_land_on_both_nodes_and_are_reached_through_the_api_server() {
    let client = cluster().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(nodes.items.len(), 2, "the test cluster must have two nodes");
    let pods: Api<Pod> = Api::namespaced(client, "repobox");

    let app = app(Kind::Kubernetes);
    let mut placed: Vec<(String, String)> = Vec::new();
    // The scheduler spreads a node's load: a few sandboxes land on both.
    for _ in 0..8 {
        let (status, created) = app
            .post(
                "/api/v1/containers",
                &json!({"repo_url": simple_url("nodes")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["container_id"].as_str().unwrap().to_owned();
        let listed = pods
            .list(&ListParams::default().labels(&format!("repobox.id={id}")))
            .await
            .unwrap();
        let node = listed.items[0]
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .expect("a scheduled pod");
        placed.push((id, node));
        let mut seen: Vec<&str> = placed.iter().map(|(_, node)| node.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() == 2 {
            break;
        }
    }
    let mut nodes_seen: Vec<&str> = placed.iter().map(|(_, node)| node.as_str()).collect();
    nodes_seen.sort_unstable();
    nodes_seen.dedup();
    assert_eq!(nodes_seen.len(), 2, "all on one node: {placed:?}");

    // Each is whole and reached: its checkout, and its own address on its node's
    // pod network (10.244/16 on the first node, 10.245/16 on the second).
    for (id, node) in &placed {
        let result = app.exec(id, "git rev-parse HEAD && hostname -I").await;
        let stdout = result["stdout"].as_str().unwrap();
        assert!(
            stdout.starts_with(&format!("{}\n", git().simple.trunk_head)),
            "{result}"
        );
        let subnet = if node == "localhost" {
            "10.244."
        } else {
            "10.245."
        };
        assert!(stdout.contains(subnet), "{node}: {result}");
    }
    for (id, _) in &placed {
        assert_eq!(app.destroy(id).await, StatusCode::NO_CONTENT);
    }
}
