//! The chart's CRD template is generated from the Rust types; this fails when
//! the checked-in file differs (run `cargo xtask crdgen` to update it).

#[test]
fn chart_crds_match_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/sightline/templates/crds.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = sightline_crds::crdgen::helm_template().expect("the CRDs serialize");
    assert!(
        checked_in == generated,
        "{} is out of date with crds/src: run `cargo xtask crdgen` and commit the result",
        path.display()
    );
}

#[test]
fn chart_sensor_cluster_roles_match_the_rust_rules() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/sightline/templates/sensor-clusterroles.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated =
        sightline_crds::crdgen::sensor_cluster_roles_template().expect("the roles serialize");
    assert!(
        checked_in == generated,
        "{} is out of date with crds/src/rbac.rs: run `cargo xtask crdgen` and commit the result",
        path.display()
    );
}

#[test]
fn every_kind_has_status_printer_columns_and_a_short_name() {
    for crd in sightline_crds::crdgen::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name} has no status subresource"
        );
        assert!(
            !v.additional_printer_columns
                .clone()
                .unwrap_or_default()
                .is_empty(),
            "{name} has no printer columns"
        );
        assert!(
            !crd.spec
                .names
                .short_names
                .clone()
                .unwrap_or_default()
                .is_empty(),
            "{name} has no short name"
        );
        assert!(
            crd.spec
                .names
                .categories
                .clone()
                .unwrap_or_default()
                .contains(&"sightline".to_owned())
        );
    }
}

#[test]
fn the_yaml_reads_back_as_the_rust_types() {
    // What helm and kubectl read is exactly what the types say: no string
    // folded, quoted or typed differently on the way through YAML.
    let yaml = sightline_crds::crdgen::yaml().expect("the CRDs serialize");
    let read: Vec<serde_json::Value> =
        sightline_crds::yaml::from_multiple(&yaml).expect("the YAML parses");
    let expected: Vec<serde_json::Value> = sightline_crds::crdgen::all()
        .iter()
        .map(|c| serde_json::to_value(c).expect("a CRD is JSON"))
        .collect();
    assert_eq!(read, expected);
}
