//! The store conformance suite against a real cluster (see
//! `archipelago_rados::testenv` for how the cluster is found).

use archipelago_rados::testenv;
use archipelago_rados::RadosStore;

fn available() -> bool {
    testenv::cluster("rados conformance").is_some()
}

fn make() -> RadosStore {
    let (conf, pool) = testenv::cluster("rados conformance").expect("checked by available()");
    RadosStore::connect(testenv::options(conf, pool, "conf")).unwrap_or_else(|e| panic!("{e}"))
}

archipelago_store::conformance_tests!(if available() => make);
