//! Model files: every invalid field gives an error that names it.

use rlaif_sim::demo::demo_model_file;
use rlaif_sim::spec::ModelFile;
use serde_json::{json, Value};

fn demo_json() -> Value {
    serde_json::from_str(&demo_model_file().to_json()).unwrap()
}

fn error_of(v: &Value) -> String {
    match ModelFile::from_json(&v.to_string()).and_then(|f| f.validate()) {
        Ok(_) => panic!("accepted an invalid model file"),
        Err(e) => e.to_string(),
    }
}

fn expect(mutate: impl FnOnce(&mut Value), needle: &str) {
    let mut v = demo_json();
    mutate(&mut v);
    let e = error_of(&v);
    assert!(
        e.contains(needle),
        "error {e:?} does not mention {needle:?}"
    );
}

#[test]
fn demo_round_trips_through_json_and_toml() {
    let f = demo_model_file();
    let back = ModelFile::from_json(&f.to_json())
        .unwrap()
        .validate()
        .unwrap();
    let orig = f.clone().validate().unwrap();
    assert_eq!(back.j, orig.j);
    let toml_text = toml::to_string(&f).unwrap();
    let t = ModelFile::from_toml(&toml_text)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(t.model.q(), orig.model.q());
}

#[test]
fn field_errors_name_the_field() {
    expect(|v| v["unknown_key"] = json!(1), "unknown_key");
    expect(|v| v["judge"]["temperature"] = json!(1), "temperature");
    expect(|v| v["W"][3] = json!([1.0, 2.0]), "W: row 3 has 2 numbers");
    expect(|v| v["s2"] = json!(0.0), "s2");
    expect(|v| v["s2"] = json!(-1.0), "s2");
    expect(|v| v["theta"] = json!([1.0]), "theta");
    expect(
        |v| v["Sigma_z"] = json!([[1.0, 2.0], [2.0, 1.0]]),
        "Sigma_z",
    );
    expect(
        |v| {
            let mut m = vec![vec![0.0; 8]; 8];
            for (i, row) in m.iter_mut().enumerate() {
                row[i] = 1.0;
            }
            m[0][0] = -1.0;
            v["Sigma_z"] = json!(m);
        },
        "Sigma_z: not symmetric positive definite",
    );
    expect(|v| v["judge"]["beta"] = json!(-0.5), "judge.beta");
    expect(|v| v["rlaif"]["tau"] = json!(0.0), "rlaif.tau");
    expect(
        |v| v["constitution"] = json!({"principles": [7]}),
        "constitution.principles: index 7 out of range",
    );
    expect(
        |v| v["constitution"] = json!({"principles": [0], "weights": [1.0, 2.0]}),
        "constitution.weights",
    );
    expect(
        |v| v["constitution"] = json!({"principles": [0], "direction": [1.0]}),
        "exactly one of",
    );
    expect(|v| v["g"] = json!([1.0, 2.0]), "g: expected 24 numbers");
    expect(|v| v["r"] = json!(vec![0.0; 24]), "either lambda or r");
    expect(|v| v["rlaif"]["mode"] = json!("annealing"), "annealing");
    expect(
        |v| v["dictionary"][1] = v["dictionary"][0].clone(),
        "dictionary: vectors are linearly dependent",
    );
    expect(
        |v| {
            let mut p = vec![vec![0.0; 24]; 24];
            p[0][1] = 1.0;
            v["constitution"] = json!({"projection": p});
        },
        "not an orthogonal projection",
    );
}

#[test]
fn non_finite_numbers_are_rejected_in_toml() {
    let f = demo_model_file();
    let text = toml::to_string(&f)
        .unwrap()
        .replacen("s2 = 0.6", "s2 = nan", 1);
    let e = ModelFile::from_toml(&text)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("s2"), "{e}");
}
