//! The incubator's asset library, built into the binary so that `dtaas up --demo
//! incubator` works wherever the binary is (`examples/incubator/library` is the source).

use std::path::{Path, PathBuf};

/// (path in the library, content) of every file.
const FILES: [(&str, &[u8]); 15] = [
    (
        "digital_twins/incubator/README.md",
        include_bytes!("../../examples/incubator/library/digital_twins/incubator/README.md"),
    ),
    (
        "digital_twins/incubator/asset.toml",
        include_bytes!("../../examples/incubator/library/digital_twins/incubator/asset.toml"),
    ),
    (
        "digital_twins/incubator/incubator.yaml",
        include_bytes!("../../examples/incubator/library/digital_twins/incubator/incubator.yaml"),
    ),
    (
        "functions/incubator_anomaly/anomaly.py",
        include_bytes!("../../examples/incubator/library/functions/incubator_anomaly/anomaly.py"),
    ),
    (
        "functions/incubator_anomaly/asset.toml",
        include_bytes!("../../examples/incubator/library/functions/incubator_anomaly/asset.toml"),
    ),
    (
        "functions/incubator_anomaly/dtaas_process.py",
        include_bytes!(
            "../../examples/incubator/library/functions/incubator_anomaly/dtaas_process.py"
        ),
    ),
    (
        "functions/incubator_kalman/asset.toml",
        include_bytes!("../../examples/incubator/library/functions/incubator_kalman/asset.toml"),
    ),
    (
        "functions/incubator_kalman/dtaas_process.py",
        include_bytes!(
            "../../examples/incubator/library/functions/incubator_kalman/dtaas_process.py"
        ),
    ),
    (
        "functions/incubator_kalman/kalman.py",
        include_bytes!("../../examples/incubator/library/functions/incubator_kalman/kalman.py"),
    ),
    (
        "functions/incubator_supervisor/asset.toml",
        include_bytes!(
            "../../examples/incubator/library/functions/incubator_supervisor/asset.toml"
        ),
    ),
    (
        "functions/incubator_supervisor/dtaas_process.py",
        include_bytes!(
            "../../examples/incubator/library/functions/incubator_supervisor/dtaas_process.py"
        ),
    ),
    (
        "functions/incubator_supervisor/supervisor.py",
        include_bytes!(
            "../../examples/incubator/library/functions/incubator_supervisor/supervisor.py"
        ),
    ),
    (
        "models/incubator_plant/asset.toml",
        include_bytes!("../../examples/incubator/library/models/incubator_plant/asset.toml"),
    ),
    (
        "models/incubator_plant/params.json",
        include_bytes!("../../examples/incubator/library/models/incubator_plant/params.json"),
    ),
    (
        "models/incubator_plant/plant.py",
        include_bytes!("../../examples/incubator/library/models/incubator_plant/plant.py"),
    ),
];

/// The DT configuration inside the library.
pub const CONFIG: &str = "digital_twins/incubator/incubator.yaml";

/// Writes the library under `dir` (replacing what is there) and returns its root.
pub fn write(dir: &Path) -> std::io::Result<PathBuf> {
    let root = dir.join("incubator-library");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for (path, content) in FILES {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, content)?;
    }
    Ok(root)
}

/// The DT configuration's text.
pub fn config() -> &'static str {
    let (_, content) = FILES
        .iter()
        .find(|(path, _)| *path == CONFIG)
        .expect("the library holds the configuration");
    std::str::from_utf8(content).expect("the configuration is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_example_library_is_built_in() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/incubator/library");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if !path.to_string_lossy().contains("__pycache__") {
                    on_disk.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        on_disk.sort();
        let built_in: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(on_disk, built_in, "update FILES in src/demo/library.rs");
        for (path, content) in FILES {
            assert_eq!(std::fs::read(root.join(path)).unwrap(), content, "{path}");
        }
        assert!(config().contains("id: incubator"));
    }
}
