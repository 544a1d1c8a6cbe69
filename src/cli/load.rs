//! Loading the files a command names: the release, its fleet and the tier policy.
//! The only place the CLI reads spec files from disk.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit::{CliError, CliResult, Exit};
use crate::admission::{self, FreezeReading, Refusal, Refused};
use crate::spec::release::ReleaseDocument;
use crate::spec::{Fleet, InputErrors, ResolvedRelease, Source, TierPolicyFile};

/// Where the files come from, as the user gave them.
#[derive(clap::Args, Debug, Clone)]
pub struct Inputs {
    /// The Release file.
    #[arg(short = 'f', long = "filename", value_name = "RELEASE.yaml")]
    pub release: PathBuf,
    /// The fleet file; defaults to fleet.yaml beside the release file.
    #[arg(long, value_name = "FLEET.yaml", env = "CUTOVER_FLEET")]
    pub fleet: Option<PathBuf>,
    /// A directory holding tiers.yaml; defaults to the tier policy built into cutover.
    #[arg(long, value_name = "DIR", env = "CUTOVER_POLICIES")]
    pub policies: Option<PathBuf>,
}

/// Everything a release needs, loaded and resolved.
pub struct Loaded {
    pub document: ReleaseDocument,
    /// Scheduled freeze windows (`freezes.yaml` in the policies directory).
    pub windows: Vec<crate::freeze::Window>,
    pub fleet: Fleet,
    pub policy: TierPolicyFile,
    pub release: ResolvedRelease,
    /// The release file as read, to place findings in it.
    pub source: (String, String),
}

impl Loaded {
    /// Admits the release (see `cutover_core::admission`): with `freezes`, as
    /// a release about to start. Every refusal comes with its exit code and
    /// nothing is written; spec findings are placed in the release file.
    pub fn admit(&self, freezes: Option<FreezeReading<'_>>) -> CliResult<ResolvedRelease> {
        let request = admission::Request::of(&self.document, &self.fleet, &self.policy, freezes);
        admission::admit(&request)
            .admitted(&self.document.metadata.name)
            .map_err(|refused| {
                let src = Source::new(&self.source.0, &self.source.1);
                refused_error(&refused, &src)
            })
    }
}

/// A refusal as the CLI reports it: the exit code of its class, every
/// finding of that class, and that nothing was touched.
pub fn refused_error(refused: &Refused, src: &Source) -> CliError {
    // Only the file is wrong: its problems, each placed (and structured for `-o json`).
    let placed: Vec<_> = refused
        .findings
        .iter()
        .map(|f| match f {
            crate::admission::Finding::Spec(f) => Some(f.locate(src)),
            _ => None,
        })
        .collect();
    if let Some(placed) = placed.into_iter().collect::<Option<Vec<_>>>()
        && !placed.is_empty()
    {
        return CliError::new(exit_of_refusal(refused.refusal()), InputErrors(placed));
    }
    let message = refused.message(Some(src), ", nothing was touched");
    CliError::new(exit_of_refusal(refused.refusal()), anyhow::anyhow!(message))
}

/// The exit code a pipeline sees for a refusal.
pub fn exit_of_refusal(refusal: Refusal) -> Exit {
    match refusal {
        Refusal::Invalid => Exit::Error,
        Refusal::Policy => Exit::Policy,
        Refusal::Frozen => Exit::Frozen,
    }
}

impl Inputs {
    pub fn fleet_path(&self) -> PathBuf {
        self.fleet.clone().unwrap_or_else(|| {
            self.release
                .parent()
                .unwrap_or(Path::new("."))
                .join("fleet.yaml")
        })
    }

    pub fn load(&self) -> CliResult<Loaded> {
        // The release first: a missing or unreadable release is named before
        // the files looked up beside it.
        let name = self.release.display().to_string();
        if !self.release.is_file() {
            return Err(CliError::new(
                Exit::Error,
                anyhow::anyhow!(
                    "the release file {name} does not exist: pass -f with the path of a Release"
                ),
            ));
        }
        let text = read(&self.release)?;
        let policy = tier_policy(self.policies.as_deref())?;
        let fleet_path = self.fleet_path();
        let fleet_text = read(&fleet_path).with_context(|| {
            format!(
                "a fleet file is needed: pass --fleet or put fleet.yaml beside {}",
                self.release.display()
            )
        })?;
        let fleet =
            Fleet::parse(&fleet_path.display().to_string(), &fleet_text).map_err(input_error)?;
        let src = Source::new(&name, &text);
        let document: ReleaseDocument = src
            .decode()
            .map_err(|e| input_error(InputErrors(vec![e])))?;
        let mut header = Vec::new();
        // The Release object carries these: held to the API server's limits
        // before anything is written.
        let meta = serde_json::json!({"labels": document.metadata.labels, "annotations": document.metadata.annotations});
        for (field, message) in crate::spec::object_meta::problems(&meta) {
            header.push(src.error_at(&format!("metadata.{field}"), message));
        }
        if document.api_version != crate::spec::API_VERSION {
            header.push(src.error_at(
                "apiVersion",
                format!(
                    "expected {:?}, got {:?}",
                    crate::spec::API_VERSION,
                    document.api_version
                ),
            ));
        }
        if document.kind != "Release" {
            header.push(src.error_at(
                "kind",
                format!("expected \"Release\", got {:?}", document.kind),
            ));
        }
        if !header.is_empty() {
            return Err(input_error(InputErrors(header)));
        }
        self.resolve(document, text, fleet, policy)
    }

    /// Resolves a (possibly edited) release document against its fleet and tier.
    /// `text` is the release file as read, for placing findings in it.
    pub fn resolve(
        &self,
        document: ReleaseDocument,
        text: String,
        fleet: Fleet,
        policy: TierPolicyFile,
    ) -> CliResult<Loaded> {
        let name = self.release.display().to_string();
        let src = Source::new(&name, &text);
        let meta = &document.metadata;
        // The spec must resolve; the tier's rules and freezes are each
        // command's to weigh (`check` reports them, `run` refuses on them).
        let admission = admission::admit(&admission::Request::of(&document, &fleet, &policy, None));
        let release = match admission.release {
            Some(release) => release,
            None => {
                let refused = Refused {
                    findings: admission.findings,
                    name: meta.name.clone(),
                };
                return Err(refused_error(&refused, &src));
            }
        };
        let windows = self.windows()?;
        Ok(Loaded {
            document,
            windows,
            fleet,
            policy,
            release,
            source: (name, text),
        })
    }
}

impl Inputs {
    /// The freeze windows of the policies directory, if it has `freezes.yaml`.
    /// A bad zone or schedule refuses the release; it is never ignored.
    pub fn windows(&self) -> CliResult<Vec<crate::freeze::Window>> {
        windows(self.policies.as_deref())
    }
}

/// The tier policy of a policies directory (`tiers.yaml`), or the built-in one.
pub fn tier_policy(dir: Option<&Path>) -> CliResult<TierPolicyFile> {
    match dir {
        Some(dir) => {
            let path = dir.join("tiers.yaml");
            let text = read(&path)?;
            Ok(TierPolicyFile::parse(&path.display().to_string(), &text).map_err(input_error)?)
        }
        None => Ok(TierPolicyFile::builtin()),
    }
}

/// The freeze windows of a policies directory (`freezes.yaml`), if it has them.
pub fn windows(dir: Option<&Path>) -> CliResult<Vec<crate::freeze::Window>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let path = dir.join("freezes.yaml");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = read(&path)?;
    crate::freeze::window::parse(&path.display().to_string(), &text).map_err(input_error)
}

/// A file's text; bytes that are not UTF-8 are named by line and column.
pub fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(
        crate::spec::source::text(&path.display().to_string(), bytes)
            .map_err(|e| InputErrors(vec![e]))?,
    )
}

fn input_error(e: InputErrors) -> CliError {
    CliError::new(Exit::Error, e)
}
