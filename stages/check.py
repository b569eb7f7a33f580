"""check: every param (types, ranges, unknown keys, names against the registries, the backbone's
facts) before any stage does work. Depends on the whole params.yaml and writes a constant file, so
a params edit reruns this check but nothing downstream that does not read the edited param."""
import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.checks import check_params
    from musicpetl.io import atomic_path

    check_params(p)
    with atomic_path("data/params_checked") as tmp:
        tmp.write_text("params.yaml passed musicpetl.checks\n")
    return {"dataset": p.data.dataset, "task": p.data.task, "backbone": p.backbone.name, "method": p.petl.method}


if __name__ == "__main__":
    run_stage("check", main)
