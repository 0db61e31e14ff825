//! Points as users name them: `VM@latest`, `VM@ID`, or `VM@FRAGMENT` where
//! the fragment is a unique prefix or suffix of an id (ids are long:
//! `20261125T194155Z-3fa2` is named by `3fa2` or `20261125T19`).

use anyhow::Result;
use xfull_core::Error;
use xfull_core::id::PointId;
use xfull_core::manifest::Manifest;
use xfull_core::names::VmName;
use xfull_core::repo::Repository;

/// The point `VM@X` names; `None` as id means the VM's latest.
pub async fn resolve(repo: &Repository, name: &str) -> Result<(VmName, Option<PointId>)> {
    let (vm, id) = name.split_once('@').ok_or_else(|| {
        Error::InvalidArgument(format!(
            "point {name:?} must be VM@ID or VM@latest, e.g. vm1@20261125T194155Z-3fa2 \
             (a unique prefix or suffix of the id will do)"
        ))
    })?;
    let vm: VmName = vm.parse()?;
    if id == "latest" {
        return Ok((vm, None));
    }
    let id = find_id(repo, &vm, id).await?;
    Ok((vm, Some(id)))
}

/// The id of `vm` that `fragment` names: the id itself, or the only one
/// it is a prefix or a suffix of.
pub async fn find_id(repo: &Repository, vm: &VmName, fragment: &str) -> Result<PointId> {
    if fragment.is_empty()
        || !fragment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::InvalidArgument(format!(
            "point {vm}@{fragment:?}: an id is made of letters, digits and '-' \
             (`xfull points --vm {vm}` lists them)"
        ))
        .into());
    }
    let ids = repo.point_ids(vm).await?;
    if let Some(id) = ids.iter().find(|id| id.as_str() == fragment) {
        return Ok(id.clone());
    }
    let matching: Vec<&PointId> = ids
        .iter()
        .filter(|id| id.as_str().starts_with(fragment) || id.as_str().ends_with(fragment))
        .collect();
    match matching[..] {
        [id] => Ok(id.clone()),
        [] => Err(Error::PointNotFound {
            point: format!("{vm}@{fragment}"),
        }
        .into()),
        _ => {
            let list: Vec<String> = matching.iter().take(5).map(|i| i.to_string()).collect();
            Err(Error::InvalidArgument(format!(
                "point {vm}@{fragment} is ambiguous: {} ids match ({}{}); give more of the id",
                matching.len(),
                list.join(", "),
                if matching.len() > 5 { ", ..." } else { "" }
            ))
            .into())
        }
    }
}

/// The manifest of the point `name` names.
pub async fn load(repo: &Repository, name: &str) -> Result<Manifest> {
    let (vm, id) = resolve(repo, name).await?;
    let spec = xfull_core::point_spec::PointSpec { vm, id };
    Ok(repo.resolve(&spec).await?)
}
