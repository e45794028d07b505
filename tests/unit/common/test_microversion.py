import pytest

from stratus.common.errors import ApiError, BadRequest
from stratus.common.microversion import MicroversionMiddleware, Version


def mw():
    return MicroversionMiddleware(None, service_type="compute", minimum="2.1", maximum="2.90",
                                  legacy_header="X-OpenStack-Nova-API-Version")


def test_versions_compare_numerically():
    assert Version.parse("2.10") > Version.parse("2.9")
    assert Version.parse("2.100") > Version.parse("2.99")
    assert str(Version.parse("3.71")) == "3.71"


def test_negotiation():
    m = mw()
    assert str(m.choose({})) == "2.1"
    assert str(m.choose({b"openstack-api-version": b"compute 2.61"})) == "2.61"
    assert str(m.choose({b"openstack-api-version": b"volume 3.5, compute 2.10"})) == "2.10"
    assert str(m.choose({b"x-openstack-nova-api-version": b"2.37"})) == "2.37"
    assert str(m.choose({b"openstack-api-version": b"compute latest"})) == "2.90"


def test_out_of_range_is_406_and_garbage_400():
    m = mw()
    with pytest.raises(ApiError) as exc:
        m.choose({b"openstack-api-version": b"compute 2.200"})
    assert exc.value.status == 406
    with pytest.raises(BadRequest):
        m.choose({b"openstack-api-version": b"compute two"})


async def test_middleware_echoes_version():
    sent = []

    async def app(scope, receive, send):
        assert str(scope["stratus.microversion"]) == "2.47"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    m = MicroversionMiddleware(app, service_type="compute", minimum="2.1", maximum="2.90",
                               legacy_header="X-OpenStack-Nova-API-Version")

    async def send(msg):
        sent.append(msg)

    await m({"type": "http", "path": "/servers", "headers": [(b"openstack-api-version", b"compute 2.47")]},
            None, send)
    headers = dict(sent[0]["headers"])
    assert headers[b"openstack-api-version"] == b"compute 2.47"
    assert headers[b"x-openstack-nova-api-version"] == b"2.47"
    assert b"OpenStack-API-Version" in headers[b"vary"]
