"""``derot app set-exceptions`` and ``derot app set-gpu-policy``: the app owner's TEE waivers and GPU policy.

Both replace the whole setting (like ``setAppAllowDebug``); nodes apply them once the block is confirmed.
Waiver names: ``derot.chain.tee_policy.TEE_EXCEPTION_BITS``; GPU models: ``derot.constants.GpuModel``.
"""

from __future__ import annotations

from derot.chain import tee_policy
from derot.cli.app_target import open_registry, resolve_target, signing_account
from derot.cli.errors import CliError
from derot.constants import GpuModel


def add_commands(command, signer, app_id_type) -> None:
    """Adds both commands through app_cmd's ``command(name, func, text, parents)``."""
    p = command("set-exceptions", cmd_set_exceptions,
                "waive named TEE checks for the app (replaces the set; none given = no waivers)", [signer])
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")
    p.add_argument("--allow-exception", dest="waivers", action="append", default=[], metavar="NAME",
                   choices=tuple(tee_policy.TEE_EXCEPTION_BITS), help="a waiver name (repeatable): "
                   + ", ".join(tee_policy.TEE_EXCEPTION_BITS))
    p = command("set-gpu-policy", cmd_set_gpu_policy,
                "the GPU models the app accepts and whether it needs an attested GPU (replaces both)", [signer])
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")
    p.add_argument("--model", dest="models", action="append", default=[], type=str.upper,
                   choices=tuple(GpuModel.__members__), help="an allowed model (repeatable; none = any model)")
    p.add_argument("--require-gpu", action="store_true", help="refuse evidence without an attested GPU")


def _app(registry, app_id: bytes):
    app = registry.app(app_id)
    if app is None:
        raise CliError(f"app {app_id.hex()} is not registered in {registry.address}")
    return app


def cmd_set_exceptions(args) -> int:
    from derot.cli.app_cmd import emit

    target = resolve_target(args)
    account = signing_account(args, target)
    registry = open_registry(target)
    _app(registry, args.app_id)
    registry.set_app_tee_exceptions(account, args.app_id, args.waivers)
    emit({"app_id": args.app_id.hex(), "tee_exceptions": sorted(_app(registry, args.app_id).tee_exceptions),
          "block": registry.w3.eth.block_number, "note": "nodes apply it once the block is confirmed"}, args.json)
    return 0


def cmd_set_gpu_policy(args) -> int:
    from derot.cli.app_cmd import emit

    target = resolve_target(args)
    account = signing_account(args, target)
    registry = open_registry(target)
    _app(registry, args.app_id)
    registry.set_app_gpu_policy(account, args.app_id, args.models, args.require_gpu)
    app = _app(registry, args.app_id)
    emit({"app_id": args.app_id.hex(), **gpu_policy_view(app), "block": registry.w3.eth.block_number,
          "note": "nodes apply it once the block is confirmed"}, args.json)
    return 0


def gpu_policy_view(app) -> dict:
    models = [m.name for m in GpuModel if app.gpu_models & m]
    return {"gpu_models": models or "any", "gpu_required": app.gpu_required}
