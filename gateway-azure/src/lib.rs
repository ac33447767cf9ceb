//! `gateway-azure`: the converter behind `gateway import-azure`. The daemon's binary
//! (`gateway-user`) calls [`run`]; this crate depends on `gateway-config` (the raw structs it
//! writes, the validation it checks the result with) and on nothing of the daemon.
//!
//! `gateway import-azure FILE.json [--output FILE] [--bind-ip IP]`: an Azure Application
//! Gateway (ARM template, exported resource, or a fragment of its collections) → our TOML
//! configuration, with a report of what could not be carried over, then the same
//! validation as `gateway check` on the result.
//!
//! Text → [`json`] (lenient JSON) → [`source`] (where the gateway is) → [`arm`] (serde
//! structs) → [`convert`] (references followed by [`resolve`], template expressions
//! evaluated by [`expr`], findings into the [`report`]) → [`render`] (TOML text) → checked.

mod arm;
mod convert;
mod expr;
mod json;
mod render;
mod report;
mod resolve;
mod source;

#[cfg(test)]
mod tests;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use gateway_config::{self as config, plan};

pub use convert::Options;
use convert::{Imported, PLACEHOLDER};
use report::{Kind, Report};

/// Written, and `gateway check` finds the result valid.
const EXIT_VALID: u8 = 0;
/// Written, but `gateway check` lists problems: placeholders to fill in, references to
/// objects the input did not hold, values this gateway refuses.
const EXIT_CHECK_PROBLEMS: u8 = 2;
/// The input cannot be read, is not JSON, or holds no application gateway (sysexits'
/// `EX_USAGE`, as for a bad configuration). Nothing is written.
const EXIT_BAD_INPUT: u8 = 64;
/// The output file cannot be written (sysexits' `EX_CANTCREAT`).
const EXIT_CANNOT_WRITE: u8 = 73;

/// The result of an import, before anything is written.
#[derive(Debug)]
struct Import {
    pub toml: String,
    pub imported: Imported,
    pub report: Report,
    /// What the input was and the gateway's name, for the first line on stderr.
    pub described: String,
}

/// Converts the Azure JSON `text` of the file `input`; the error says why the input cannot
/// be used.
fn import(text: &str, input: &str, options: &Options) -> Result<Import, String> {
    let parsed = json::parse(text)?;
    let source = source::locate(&parsed.value)?;
    let gateway = arm::Gateway::read(&source.properties);
    if gateway.is_empty() {
        return Err(format!(
            "the application gateway has none of the collections this import reads ({})",
            arm::COLLECTIONS.join(", ")
        ));
    }
    let mut report = Report::default();
    for note in parsed.notes.iter().chain(&source.notes) {
        report.add(Kind::Input, "", note.clone());
    }
    let imported = convert::convert(&gateway, &source.template, options, &mut report);
    let header = render::Header {
        input,
        shape: source.shape,
        gateway: source.name.as_deref(),
    };
    let toml = render::render(&imported, &report, &header)
        .map_err(|error| format!("cannot write the configuration as TOML: {error}"))?;
    let described = match &source.name {
        Some(name) => format!("{}, application gateway {name:?}", source.shape),
        None => source.shape.to_owned(),
    };
    Ok(Import {
        toml,
        imported,
        report,
        described,
    })
}

/// For the fuzz targets of `fuzz/` only (the `fuzzing` feature): the import of `text`
/// with default options, as TOML, or why the input cannot be used.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn fuzz_import(text: &str) -> Result<String, String> {
    let options = Options {
        bind_ip: std::net::IpAddr::from([0, 0, 0, 0]),
    };
    import(text, "fuzz.json", &options).map(|import| import.toml)
}

/// `gateway import-azure`: converts the Azure JSON of `file`, writes the result to `output`
/// (or prints it on stdout); the report and the check's findings on stderr.
pub fn run(file: &Path, output: Option<&Path>, options: &Options) -> ExitCode {
    let input = file.display().to_string();
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{input}: cannot read: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let import = match import(&text, &input, options) {
        Ok(import) => import,
        Err(error) => {
            eprintln!("{input}: {error}");
            eprintln!("nothing written");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    eprintln!("{input}: {}", import.described);
    eprint!("{}", import.report.to_text());
    let (label, base_dir) = match output {
        Some(path) => {
            if let Err(error) = fs::write(path, &import.toml) {
                eprintln!("{}: cannot write: {error}", path.display());
                return ExitCode::from(EXIT_CANNOT_WRITE);
            }
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            (
                path.display().to_string(),
                dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            )
        }
        None => {
            print!("{}", import.toml);
            ("<stdout>".to_owned(), PathBuf::from("."))
        }
    };
    eprintln!("wrote {label}: {}", counts(&import.imported));
    ExitCode::from(check(&import.toml, &label, &base_dir))
}

/// "2 listeners, 1 backend pool, ..." of the generated file.
fn counts(imported: &Imported) -> String {
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    [
        count(imported.listeners.len(), "listener", "listeners"),
        count(imported.pools.len(), "backend pool", "backend pools"),
        count(
            imported.settings.len(),
            "backend settings",
            "backend settings",
        ),
        count(imported.rules.len(), "rule", "rules"),
        count(imported.probes.len(), "probe", "probes"),
    ]
    .join(", ")
}

/// Validates the generated text as `gateway check` validates a file; the exit code.
fn check(toml: &str, label: &str, base_dir: &Path) -> u8 {
    match config::from_toml(toml, label, base_dir) {
        Ok(config) => {
            eprintln!("gateway check: ok: {}", config.summary());
            for warning in plan::plan(&config).warnings {
                eprintln!("note: {warning}");
            }
            EXIT_VALID
        }
        Err(errors) => {
            let n = errors.len();
            eprintln!(
                "gateway check: {n} problem{} in the generated configuration:",
                if n == 1 { "" } else { "s" }
            );
            for error in &errors {
                eprintln!("{error}");
            }
            let placeholders = errors
                .iter()
                .filter(|e| e.to_string().contains(PLACEHOLDER))
                .count();
            if placeholders > 0 {
                eprintln!(
                    "{placeholders} of them concern {PLACEHOLDER} placeholders: expected until \
                     those values are filled in (see \"To do\" above)"
                );
            }
            EXIT_CHECK_PROBLEMS
        }
    }
}
