//! `coord --help` and each command's `--help` as users read them (snapshots in `tests/cmd/`; after a
//! deliberate change of the interface, regenerate them with `TRYCMD=overwrite cargo test --test cli_help`).

#[test]
fn help_texts() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
