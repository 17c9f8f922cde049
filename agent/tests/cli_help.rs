//! `agent --help` as users read it (snapshot in `tests/cmd/`; after a deliberate change of the interface,
//! regenerate it with `TRYCMD=overwrite cargo test --test cli_help`).

#[test]
fn help_texts() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
