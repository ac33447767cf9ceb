//! `gateway import-azure` (gateway-azure: lenient JSON, template expressions, references)
//! on arbitrary text. Properties, beyond not panicking: what it writes is TOML, and the
//! configuration's validation (`gateway check`) reads it to a verdict without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(written) = gateway_azure::fuzz_import(text) {
        if let Err(error) = written.parse::<toml::Table>() {
            panic!("the import wrote what is not TOML ({error}):\n{written}");
        }
        // Relative file names resolve under a directory that does not exist: nothing on
        // this machine is read.
        let _ = gateway_config::from_toml(
            &written,
            "imported.toml",
            std::path::Path::new("/nonexistent/fuzz"),
        );
    }
});
