"""cca-hil as pytest tests: the same checks on the model, a simulated board or real hardware.

    pytest examples/test_realm.py                                   # on the built-in model
    pytest --cca-profile model --cca-profile board-sim examples/    # once per profile
    pytest --cca-profile my-board --cca-lease-timeout 600 -rA examples/

Each test that uses a cca-hil fixture runs once per ``--cca-profile``; the target is
opened under an exclusive lease, and its console and link logs are attached to the
test's report (see them with ``-rA``).
"""

from __future__ import annotations

import pytest

from cca_hil.arch.pas import Pas
from cca_hil.pytest_plugin import RunSequence
from cca_hil.rmi_client import GranuleAllocator, RealmBuilder, RmiClient
from cca_hil.targets.base import Target
from cca_hil.targets.model import ModelTarget


def test_rmm_speaks_rmi_1_0(rmi: RmiClient) -> None:
    version = rmi.version(0x10000)
    assert version.ok, version.describe()
    assert version.outputs["lower"] == 0x10000


def test_target_answers_as_the_model_predicts(rmi: RmiClient, model: ModelTarget) -> None:
    """The oracle: a freshly booted model configured from the target's facts gives the same answers."""
    oracle = RmiClient(model)
    for index in (0, 1):
        assert rmi.features(index).registers == oracle.features(index).registers
    assert rmi.version(0x10000).registers == oracle.version(0x10000).registers


def test_a_delegated_granule_faults_for_the_host(cca_target: Target, rmi: RmiClient) -> None:
    granule = GranuleAllocator.for_target(cca_target).granule()
    assert cca_target.access(granule, "read").ok
    assert rmi.granule_delegate(granule).ok
    try:
        probe = cca_target.access(granule, "read")
        assert probe.fault is not None and probe.fault.gpf, "a Realm PAS granule must fault for NS"
        assert rmi.granule_delegate(granule).status_name == "error_input"
    finally:
        assert rmi.granule_undelegate(granule).ok
    assert cca_target.access(granule, "read").ok


@pytest.mark.cca_requires("realm_exec")
def test_a_realm_is_built_activated_and_torn_down(cca_target: Target, rmi: RmiClient) -> None:
    builder = RealmBuilder(rmi, GranuleAllocator.for_target(cca_target), data_granules=2)
    realm = builder.build()
    if cca_target.has("gpt_read"):
        assert cca_target.gpt_pas(realm.rd) is Pas.REALM
    builder.destroy(realm)


@pytest.mark.cca_requires("rme")
def test_the_bundled_realm_lifecycle_sequence(run_sequence: RunSequence) -> None:
    """A sequence inside a test: a failing step fails the test, the steps are in its report."""
    result = run_sequence("realm-lifecycle")
    assert result.steps, "the sequence ran its steps"


@pytest.mark.cca_requires("mec")
def test_realms_get_their_own_mecid(cca_target: Target, rmi: RmiClient) -> None:
    """Skipped (with the reason) on a target without FEAT_MEC, such as the plain model."""
    builder = RealmBuilder(rmi, GranuleAllocator.for_target(cca_target), data_granules=1)
    realm = builder.build()
    try:
        assert cca_target.realm_mecid(realm.rd) not in (None, 0)
    finally:
        builder.destroy(realm)
