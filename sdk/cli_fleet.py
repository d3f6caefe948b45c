"""``tillsight fleet ...`` and ``tillsight run --fleet``: parsing and exit codes; the work is in :mod:`tillsight.fleet`."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import Any

from .errors import OptionsError

__all__ = ["add_fleet", "add_run_fleet_flags", "fleet_command", "run_with_fleet"]


def _share(text: str) -> float:
    value = text.strip().rstrip("%")
    try:
        share = float(value) / 100.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage such as 5%") from None
    if not 0.0 < share <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a percentage in (0%, 100%]")
    return share


def _broker_flags(parser: Any) -> None:
    parser.add_argument(
        "--broker", required=True, metavar="URL", help="the fleet's broker and topic prefix: mqtt[s]://[USER@]HOST[:PORT]/PREFIX"
    )
    parser.add_argument("--broker-ca", metavar="PEM", help="certificate authorities to trust for mqtts://")


def add_fleet(commands: Any) -> None:
    """The ``fleet`` command and its subcommands."""
    fleet = commands.add_parser("fleet", help="roll bundles out to kiosks over MQTT and see how they run")
    sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="SUBCOMMAND")
    pack = sub.add_parser("pack", help="pack a (signed) bundle folder into one file to serve over HTTP")
    pack.add_argument("bundle")
    pack.add_argument("out", help="the file to write, e.g. pi4-2026-12-05.tar")
    roll = sub.add_parser("rollout", help="publish a packed bundle to kiosks in waves; abort and roll back on failures")
    roll.add_argument("packed", help="the file tillsight fleet pack wrote (served at --url)")
    roll.add_argument("--url", required=True, help="the http(s):// address kiosks download it from")
    roll.add_argument("--version", dest="bundle_version", help="the bundle's version (default: the packed file's sha256 start)")
    _broker_flags(roll)
    who = roll.add_mutually_exclusive_group(required=True)
    who.add_argument("--kiosks", metavar="FILE", help="the kiosk ids, one per line")
    who.add_argument("--group", help="every kiosk reporting this group")
    roll.add_argument("--canary", type=_share, default=0.05, help="share of the kiosks in the first wave (default 5%%)")
    roll.add_argument("--waves", type=int, default=3, help="waves in all, the canary included (default 3)")
    roll.add_argument(
        "--abort-if", default="failed>10%", help="abort and roll back when a wave has failed>P%% (default failed>10%%)"
    )
    roll.add_argument("--wave-timeout", type=float, default=900.0, metavar="S", help="seconds a wave may take (default 900)")
    status = sub.add_parser("status", help="one row per kiosk: version, acceptance, p50, drift, last seen")
    _broker_flags(status)
    conformance = sub.add_parser("conformance", help="add a conformance set to a bundle converted before it had one")
    conformance.add_argument("bundle")
    conformance.add_argument("photos", help="evaluation photos: class folder or list file")
    conformance.add_argument("--sign-key", metavar="PEM", help="sign the bundle again with this private key")


def add_run_fleet_flags(run: Any) -> None:
    """``tillsight run`` flags of a kiosk in a fleet."""
    run.add_argument(
        "--bundle-version", metavar="V", help="the starting bundle's version, on every event (default: its model's sha256 start)"
    )
    group = run.add_argument_group('fleet (pip install "tillsight[fleet]")')
    group.add_argument("--fleet", metavar="URL", help="follow the fleet's desired state: mqtt[s]://[USER@]HOST[:PORT]/PREFIX")
    group.add_argument("--kiosk-id", help="this kiosk's id in the fleet")
    group.add_argument("--kiosk-group", default="", help="this kiosk's group, for rollouts by --group")
    group.add_argument(
        "--fleet-store", metavar="DIR", help="the kiosk's bundles and their record (default: $XDG_STATE_HOME/tillsight/fleet)"
    )
    group.add_argument("--local-photos", metavar="DIR", help="labeled photos of this kiosk's camera a new bundle must classify")
    group.add_argument("--min-local-top1", type=float, default=80.0, help="their top-1 a new bundle must keep (default 80)")
    group.add_argument(
        "--health-interval", type=float, default=300.0, metavar="S", help="seconds between health reports (default 300)"
    )


def _broker(url: str, ca: str | None = None) -> Any:
    from .pipelines.mqtt import MqttOptions

    return MqttOptions.from_url(url, password=os.environ.get("TILLSIGHT_MQTT_PASSWORD") or None, ca_file=ca)


def fleet_options(args: argparse.Namespace) -> Any:
    """The FleetOptions of ``tillsight run --fleet`` (None without ``--fleet``)."""
    if not args.fleet:
        if args.kiosk_id:
            raise OptionsError("--kiosk-id needs --fleet URL")
        return None
    from .fleet import AcceptanceOptions, FleetOptions

    if not args.kiosk_id:
        raise OptionsError("--fleet needs --kiosk-id: this kiosk's id in the fleet")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    keys = tuple(args.trusted_key or ())
    return FleetOptions(
        broker=_broker(args.fleet, args.mqtt_ca),
        kiosk_id=args.kiosk_id,
        group=args.kiosk_group,
        store=Path(args.fleet_store) if args.fleet_store else Path(state) / "tillsight" / "fleet",
        trusted_keys=keys,
        acceptance=AcceptanceOptions(
            local_photos=Path(args.local_photos) if args.local_photos else None, min_local_top1=args.min_local_top1
        ),
        health_interval_s=args.health_interval,
    )


def run_with_fleet(kiosk_options: Any, fleet: Any, sinks: list[Any]) -> Any:
    """Run the kiosk as a fleet member: the store picks the bundle, the agent follows the desired state."""
    from .fleet import FleetAgent
    from .kiosk import Kiosk

    agent = FleetAgent(fleet)
    kiosk = Kiosk(agent.kiosk_options(kiosk_options), sinks=[*sinks, agent.observe], on_frame=agent.on_frame)
    agent.start(kiosk)
    try:
        return kiosk.run()
    finally:
        agent.stop()


def fleet_command(args: argparse.Namespace) -> int:
    """``tillsight fleet SUBCOMMAND``."""
    from . import fleet

    if args.fleet_command == "pack":
        digest = fleet.pack_bundle(args.bundle, args.out)
        print(f"packed {args.bundle} into {args.out} ({Path(args.out).stat().st_size} bytes, sha256 {digest})")
        return 0
    if args.fleet_command == "rollout":
        return _rollout(args)
    if args.fleet_command == "status":
        return _status(args)
    return _conformance(args)


def _rollout(args: argparse.Namespace) -> int:
    from . import fleet

    kiosks: tuple[str, ...] = ()
    if args.kiosks:
        try:
            lines = Path(args.kiosks).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise OptionsError(
                f"--kiosks {args.kiosks} cannot be read ({exc.strerror}); give a file of kiosk ids, one per line"
            ) from exc
        kiosks = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    options = fleet.RolloutOptions(
        broker=_broker(args.broker, args.broker_ca),
        kiosks=kiosks,
        group=args.group or "",
        canary=args.canary,
        waves=args.waves,
        abort_if_failed=fleet.parse_abort_if(args.abort_if),
        wave_timeout_s=args.wave_timeout,
    )
    state = fleet.desired_state(args.packed, args.url, args.bundle_version)
    print(f"rolling out {state.version} ({state.bytes} bytes, sha256 {state.sha256[:12]}...)")
    result = fleet.rollout(state, options, progress=print)
    running = sum(outcome.outcome == "running" for outcome in result.outcomes)
    if result.completed:
        print(f"rollout {result.rollout_id}: {running} kiosks run {result.version} ({result.seconds:.0f} s)")
        return 0
    print(f"rollout {result.rollout_id} aborted at wave {result.aborted_wave}: {result.reason}", file=sys.stderr)
    return 1


def _status(args: argparse.Namespace) -> int:
    from . import fleet

    rows = fleet.fleet_status(_broker(args.broker, args.broker_ca))
    if not rows:
        print("no kiosk has reported yet")
        return 0
    print(f"{'kiosk':<14} {'status':<12} {'version':<14} {'conformance':>11} {'p50 ms':>7} {'drift':<26} last seen")
    for reported, health in rows:
        acceptance = reported.acceptance
        conformance = (
            f"{acceptance.conformance_agreement:.1f}%" if acceptance is not None and acceptance.conformance_inputs else "-"
        )
        p50 = f"{health.p50_ms:.1f}" if health is not None else "-"
        drift = (
            ", ".join(f"{a.statistic} {a.value:+.2f}" for a in health.drift) if health is not None and health.drift else "none"
        )
        seen = max(reported.updated, health.updated if health is not None else 0.0)
        when = datetime.datetime.fromtimestamp(seen).strftime("%Y-%m-%d %H:%M:%S") if seen else "-"
        print(
            f"{reported.kiosk_id:<14} {reported.status.value:<12} {reported.current:<14} {conformance:>11} {p50:>7} {drift:<26} {when}"
        )
        if reported.reason:
            print(f"{'':<14} {reported.reason}")
    return 0


def _conformance(args: argparse.Namespace) -> int:
    from .conformance import add_conformance_set_from_photos
    from .datasets import read_image_set

    kept = add_conformance_set_from_photos(args.bundle, read_image_set(args.photos))
    if not kept:
        raise OptionsError(f"none of the photos of {args.photos} is classified clearly enough for a conformance set")
    print(f"added a conformance set of {kept} inputs to {args.bundle}")
    if args.sign_key:
        from .signing import sign_bundle

        print(f"signed {args.bundle} with key {sign_bundle(args.bundle, args.sign_key)}")
    else:
        print("the bundle's manifest changed: sign it again (tillsight sign) before a rollout")
    return 0
