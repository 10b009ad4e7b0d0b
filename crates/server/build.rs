//! Compiles the server's integration tests a second time against PostgreSQL
//! when `HEALTHGATE_TEST_POSTGRES_URL` is set (cfg `pg_tests`).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(pg_tests)");
    println!("cargo:rerun-if-env-changed=HEALTHGATE_TEST_POSTGRES_URL");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("HEALTHGATE_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=pg_tests");
    }
}
