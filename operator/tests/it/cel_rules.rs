//! The CRD's CEL rules (`x-kubernetes-validations`), evaluated the way the API server does:
//! each rule at the node that carries it, with `self` bound to that node's value after
//! defaulting, and only where the node is present. The samples pass every rule; each broken
//! pipeline fails exactly the rule meant for it, with its message.

use cel_interpreter::{Context, Program, Value as Cel};
use flashcard_operator::crd::FlashcardPipeline;
use serde_json::{Value, json};

fn read(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// (schema path, rule, message) of every rule in the generated CRD.
fn rules() -> Vec<(Vec<String>, String, String)> {
    let crd: Value = serde_saphyr::from_str(&read("crds/flashcardpipelines.flashcards.dev.yaml"))
        .expect("the CRD parses");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    fn walk(node: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String, String)>) {
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((
                path.clone(),
                rule["rule"].as_str().unwrap().to_owned(),
                rule["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        for (k, v) in node["properties"].as_object().into_iter().flatten() {
            path.push(k.clone());
            walk(v, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out);
    out
}

/// The pipeline as the API server stores it: parsed (defaults filled in) and written back.
fn defaulted(yaml_or_json: Value) -> Value {
    let p: FlashcardPipeline = serde_json::from_value(yaml_or_json).expect("a pipeline");
    serde_json::to_value(&p).unwrap()
}

/// The messages of the rules `obj` fails.
fn failures(obj: &Value) -> Vec<String> {
    let mut failed = Vec::new();
    for (path, rule, message) in rules() {
        let mut node = obj;
        for part in &path {
            node = &node[part.as_str()];
        }
        if node.is_null() {
            continue;
        }
        let program = Program::compile(&rule).unwrap_or_else(|e| panic!("rule {rule}: {e:?}"));
        let mut ctx = Context::default();
        ctx.add_variable("self", node.clone())
            .unwrap_or_else(|e| panic!("bind self for {rule}: {e:?}"));
        match program.execute(&ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => failed.push(message),
            other => panic!("rule {rule} at {path:?} gave {other:?}"),
        }
    }
    failed
}

fn sample(name: &str) -> Value {
    let v: Value = serde_saphyr::from_str(&read(&format!("manifests/samples/{name}"))).unwrap();
    let mut v = defaulted(v);
    v["metadata"]["namespace"] = json!("study");
    v
}

/// A change that breaks a pipeline.
type Breaks = Box<dyn Fn(&mut Value)>;

#[test]
fn samples_pass_every_rule_and_each_broken_pipeline_fails_its_own() {
    assert!(
        rules().len() >= 8,
        "the CRD's rules are found: {:?}",
        rules()
    );
    for name in ["pipeline-minimal.yaml", "pipeline-full.yaml"] {
        assert_eq!(failures(&sample(name)), Vec::<String>::new(), "{name}");
    }
    let broken: Vec<(&str, Breaks)> = vec![
        (
            "minReplicas must not exceed maxReplicas",
            Box::new(|p: &mut Value| {
                p["spec"]["worker"]["minReplicas"] = json!(5);
                p["spec"]["worker"]["maxReplicas"] = json!(2);
            }),
        ),
        (
            "baseUrl",
            Box::new(|p: &mut Value| {
                p["spec"]["provider"]["baseUrl"] = json!("http://evil.example/v1");
            }),
        ),
        (
            "63 characters",
            Box::new(|p: &mut Value| {
                p["metadata"]["name"] = json!("Not_A_Tag");
            }),
        ),
        (
            "apiKeysSecretRef",
            Box::new(|p: &mut Value| {
                p["spec"]["api"]["identity"] =
                    json!({"mode": "apiKey", "header": "X-Forwarded-User"});
            }),
        ),
        (
            "queueDepthHigh",
            Box::new(|p: &mut Value| {
                p["spec"]["alerts"]["queueDepthHigh"] = json!(200);
                p["spec"]["alerts"]["queueDepthCritical"] = json!(100);
            }),
        ),
        (
            "reason",
            Box::new(|p: &mut Value| {
                p["spec"]["budget"]["killSwitch"] =
                    json!({"manual": true, "automatic": true, "reason": ""});
            }),
        ),
        (
            "identity mode body behind an Ingress",
            Box::new(|p: &mut Value| {
                p["spec"]["api"]["identity"] =
                    json!({"mode": "body", "header": "X-Forwarded-User"});
                p["spec"]["api"]["ingress"] =
                    json!({"host": "cards.example.org", "allowBodyIdentity": false});
            }),
        ),
    ];
    for (expected, breaks) in broken {
        let mut p = sample("pipeline-minimal.yaml");
        breaks(&mut p);
        let failed = failures(&p);
        assert_eq!(failed.len(), 1, "{expected}: {failed:?}");
        assert!(failed[0].contains(expected), "{expected}: {failed:?}");
    }
    // The allowed forms of baseUrl pass.
    for url in [
        "https://api.example/v1",
        "http://vllm.models.svc:8000/v1",
        "http://localhost:8080/v1",
    ] {
        let mut p = sample("pipeline-minimal.yaml");
        p["spec"]["provider"]["baseUrl"] = json!(url);
        assert_eq!(failures(&p), Vec::<String>::new(), "{url}");
    }
}
