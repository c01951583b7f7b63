//! Devices a step gets beyond what its sandbox gives every step (`agent.devices`,
//! `agent.gpus`), as GitLab Runner's `devices` and `gpus = "all"`: a GPU pool's agents give
//! their steps the machine's NVIDIA GPUs (a DGX's, a Kubernetes GPU node's), a virtualisation
//! pool `/dev/kvm`. Host steps see every device anyway.
//!
//! bwrap gives a sandbox a `/dev` of its own with the basic nodes alone, so these are bound
//! into it one by one; for the NVIDIA GPUs that is every `/dev/nvidia*` node (the devices,
//! `nvidiactl`, `nvidia-uvm`, `nvidia-caps/`), the driver's libraries being on the read-only
//! root already. Containers get them from their engine: podman through the CDI specification
//! NVIDIA's toolkit writes (`--device nvidia.com/gpu=all`), docker through NVIDIA's runtime
//! (`--gpus all`).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDevices {
    /// Host device nodes, each at its own path in the step (`/dev/kvm`).
    pub paths: Vec<PathBuf>,
    /// Every NVIDIA GPU of the machine.
    pub gpus: bool,
}

impl StepDevices {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.gpus
    }

    /// What is wrong with these devices on this machine, for a sandbox that binds nodes
    /// (bwrap); `dev` is where the machine's device nodes are (`/dev`).
    pub fn check_nodes(&self, dev: &Path) -> Result<(), String> {
        if let Some(missing) = self.paths.iter().find(|p| !p.exists()) {
            return Err(format!(
                "agent.devices: {} does not exist on this machine",
                missing.display()
            ));
        }
        if self.gpus && nvidia_nodes(dev).is_empty() {
            return Err(format!(
                "agent.gpus: all, but there is no NVIDIA device in {} (nvidia0, nvidiactl): is \
                 the NVIDIA driver installed and loaded (nvidia-smi)?",
                dev.display()
            ));
        }
        Ok(())
    }

    /// The nodes a sandbox binds: the configured paths, then the GPUs' under `dev`.
    pub fn nodes(&self, dev: &Path) -> Vec<PathBuf> {
        let mut nodes = self.paths.clone();
        if self.gpus {
            nodes.extend(nvidia_nodes(dev));
        }
        nodes
    }
}

/// The NVIDIA driver's nodes in `dev`: `nvidia0`.., `nvidiactl`, `nvidia-uvm`,
/// `nvidia-uvm-tools`, `nvidia-modeset` and the `nvidia-caps` directory; sorted.
pub fn nvidia_nodes(dev: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut nodes: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
        .map(|e| e.path())
        .collect();
    nodes.sort();
    nodes
}

/// Whether a CDI specification of NVIDIA GPUs is where podman looks for one (`/etc/cdi`,
/// `/var/run/cdi`): without it, `--device nvidia.com/gpu=all` fails every step.
pub fn cdi_has_nvidia_gpus(dirs: &[&Path]) -> bool {
    dirs.iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|spec| spec.contains("nvidia.com/gpu"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gpus_are_every_nvidia_node() {
        let dev = tempfile::tempdir().unwrap();
        for name in [
            "null",
            "nvidia0",
            "nvidia1",
            "nvidiactl",
            "nvidia-uvm",
            "nvme0",
        ] {
            std::fs::write(dev.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dev.path().join("nvidia-caps")).unwrap();
        let devices = StepDevices {
            paths: vec!["/dev/null".into()],
            gpus: true,
        };
        let names: Vec<String> = devices
            .nodes(dev.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "null",
                "nvidia-caps",
                "nvidia-uvm",
                "nvidia0",
                "nvidia1",
                "nvidiactl"
            ]
        );
        assert_eq!(devices.check_nodes(dev.path()), Ok(()));
    }

    #[test]
    fn missing_devices_are_named() {
        let empty = tempfile::tempdir().unwrap();
        let gpus = StepDevices {
            paths: Vec::new(),
            gpus: true,
        };
        let err = gpus.check_nodes(empty.path()).unwrap_err();
        assert!(err.contains("no NVIDIA device"), "{err}");
        let kvm = StepDevices {
            paths: vec![empty.path().join("kvm")],
            gpus: false,
        };
        let err = kvm.check_nodes(empty.path()).unwrap_err();
        assert!(err.contains("kvm does not exist"), "{err}");
        assert!(StepDevices::default().is_empty());
    }

    #[test]
    fn a_cdi_specification_of_nvidia_gpus_is_found() {
        let cdi = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        assert!(!cdi_has_nvidia_gpus(&[
            cdi.path(),
            Path::new("/nonexistent")
        ]));
        std::fs::write(
            cdi.path().join("nvidia.yaml"),
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n  - name: all\n",
        )
        .unwrap();
        assert!(cdi_has_nvidia_gpus(&[other.path(), cdi.path()]));
    }
}
