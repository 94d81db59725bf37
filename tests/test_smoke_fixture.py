import pytest

pytestmark = pytest.mark.anyio


async def test_fleet_opens(fleet):
    assert (await fleet.workspaces())[0].is_default
