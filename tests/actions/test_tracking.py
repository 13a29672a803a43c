"""The carrier-tracking backends (actions/store/tracking/) against the stand-ins of
EasyPost's Trackers API and AfterShip's Tracking API (tests/store_api/): statuses mapped
onto the delivery exceptions, credentials refused, throttling waited out, one read per
turn, and the store's shipments told with the carrier's view over the demo store."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from actions.store.backend import check_config, open_systems
from actions.store.tracking import TrackedStore, tracking_backend
from actions.store.tracking.aftership import AfterShipConfig, AfterShipTracking, slug_of
from actions.store.tracking.easypost import EasyPostConfig, EasyPostTracking
from actions.store.types import (
    DeliveryException,
    StoreConfigError,
    StoreUnavailable,
    TrackingNotFound,
    TrackingStatus,
)
from tests.conftest import woocommerce_env
from tests.store_api.aftership import AfterShipStandIn
from tests.store_api.easypost import EasyPostStandIn
from tests.store_api.woocommerce import WooCommerceStandIn

T = TrackingStatus
D = DeliveryException


@pytest.fixture
def easypost(now: datetime) -> Iterator[EasyPostStandIn]:
    api = EasyPostStandIn(now=now)
    api.start()
    yield api
    api.stop()


@pytest.fixture
def aftership(now: datetime) -> Iterator[AfterShipStandIn]:
    api = AfterShipStandIn(now=now)
    api.start()
    yield api
    api.stop()


class Sleeps:
    def __init__(self) -> None:
        self.waits: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def easypost_client(api: EasyPostStandIn, sleeps: Sleeps, key: str = "") -> EasyPostTracking:
    return EasyPostTracking(EasyPostConfig.from_env({
        "EASYPOST_API_KEY": key or api.api_key, "EASYPOST_API_BASE_URL": api.url}), sleeps)


def aftership_client(api: AfterShipStandIn, sleeps: Sleeps, key: str = "") -> AfterShipTracking:
    return AfterShipTracking(AfterShipConfig.from_env({
        "AFTERSHIP_API_KEY": key or api.api_key, "AFTERSHIP_API_BASE_URL": api.base_url}),
        sleeps)


# --- EasyPost ----------------------------------------------------------------------------

@pytest.mark.parametrize("code, status, exception", [
    ("EZ1000000001", T.PRE_TRANSIT, D.NONE),
    ("EZ2000000002", T.IN_TRANSIT, D.NONE),
    ("EZ3000000003", T.OUT_FOR_DELIVERY, D.NONE),
    ("EZ4000000004", T.DELIVERED, D.NONE),
    ("EZ5000000005", T.RETURN_TO_SENDER, D.LOST),
    ("EZ6000000006", T.FAILURE, D.LOST),
    ("EZ7000000007", T.UNKNOWN, D.NONE),
])
def test_easyposts_test_codes_map_onto_the_delivery_exceptions(
        easypost: EasyPostStandIn, code: str, status: TrackingStatus,
        exception: DeliveryException) -> None:
    client = easypost_client(easypost, Sleeps())
    tracking = client.track(code, "USPS")
    assert tracking.status is status and status.exception is exception
    assert tracking.tracking_number == code and tracking.carrier == "USPS"
    assert tracking.reference.startswith("trk_")
    if status is T.UNKNOWN:
        assert tracking.events == ()
    else:
        assert [e.time for e in tracking.events] == sorted(e.time for e in tracking.events)
        assert tracking.events[0].description == "Pre-Shipment information received"
        assert tracking.events[0].location == "HOUSTON, TX"
    if status is T.DELIVERED:
        assert tracking.delivered_at == tracking.events[-1].time
        assert tracking.detail == "Delivered, In/At Mailbox"
    else:
        assert tracking.delivered_at is None
    # created once, then read by id
    again = client.track(code, "USPS")
    assert again == tracking
    assert len(easypost.calls("POST", "/v2/trackers")) == 1
    assert len(easypost.calls("GET", r"/v2/trackers/trk_\w+")) == 1
    assert easypost.calls("POST", "/v2/trackers")[0].body == {
        "tracker": {"tracking_code": code, "carrier": "USPS"}}
    client.close()


def test_easypost_held_up_and_lost_details_are_exceptions(easypost: EasyPostStandIn,
                                                          now: datetime) -> None:
    client = easypost_client(easypost, Sleeps())
    easypost.parcel("1Z999AA10123456784", "in_transit", status_detail="weather_delay",
                    steps=[("in_transit", "Weather delay", "Memphis", "TN")],
                    est_delivery=now + timedelta(days=3))
    easypost.parcel("771234509876", "in_transit", status_detail="lost")
    held = client.track("1Z999AA10123456784", "UPS")
    assert held.status is T.EXCEPTION and held.status.exception is D.DELAYED
    assert held.estimated_delivery == (now + timedelta(days=3)).date()
    assert client.track("771234509876", "FedEx").status.exception is D.LOST
    # the shops' carrier names, as EasyPost names them
    assert easypost.calls("POST", "/v2/trackers")[0].body["tracker"]["carrier"] == "UPS"
    assert easypost.calls("POST", "/v2/trackers")[1].body["tracker"]["carrier"] == "FedEx"
    assert client.track("4819203799", "DHL").status is T.UNKNOWN
    assert easypost.calls("POST", "/v2/trackers")[2].body["tracker"]["carrier"] == \
        "DHLExpress"


def test_easypost_refuses_a_wrong_key_as_unavailable(easypost: EasyPostStandIn,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    client = easypost_client(easypost, Sleeps(), key="EZTKwrong")
    with pytest.raises(StoreUnavailable, match="refused the API key"):
        client.track("EZ2000000002", "USPS")
    [call] = easypost.received
    assert call.status == 401
    assert "EASYPOST_API_KEY" in caplog.text and "EZTKwrong" not in caplog.text


def test_easypost_throttling_is_waited_out_then_given_up(easypost: EasyPostStandIn) -> None:
    sleeps = Sleeps()
    client = easypost_client(easypost, sleeps)
    easypost.throttle_next, easypost.retry_after = 2, "1.5"
    assert client.track("EZ3000000003", "USPS").status is T.OUT_FOR_DELIVERY
    assert sleeps.waits == [1.5, 1.5]  # as Retry-After asked
    easypost.throttle_next, easypost.retry_after = 5, "60"
    with pytest.raises(StoreUnavailable, match="kept throttling"):
        client.track("EZ4000000004", "USPS")
    assert sleeps.waits[2:] == [2.0, 2.0]  # never longer than a turn allows
    easypost.throttle_next = 0
    easypost.fail_next = 1
    assert client.track("EZ4000000004", "USPS").status is T.DELIVERED


def test_easypost_cannot_track_without_a_code(easypost: EasyPostStandIn) -> None:
    with pytest.raises(TrackingNotFound):
        easypost_client(easypost, Sleeps()).track("", "USPS")


# --- AfterShip ---------------------------------------------------------------------------

@pytest.mark.parametrize("tag, subtag, status, exception", [
    ("Pending", "Pending_001", T.UNKNOWN, D.NONE),
    ("InfoReceived", "InfoReceived_001", T.PRE_TRANSIT, D.NONE),
    ("InTransit", "InTransit_002", T.IN_TRANSIT, D.NONE),
    ("OutForDelivery", "OutForDelivery_001", T.OUT_FOR_DELIVERY, D.NONE),
    ("AttemptFail", "AttemptFail_001", T.ATTEMPTED_DELIVERY, D.DELAYED),
    ("Delivered", "Delivered_001", T.DELIVERED, D.NONE),
    ("AvailableForPickup", "AvailableForPickup_001", T.AVAILABLE_FOR_PICKUP, D.NONE),
    ("Exception", "Exception_004", T.EXCEPTION, D.DELAYED),
    ("Exception", "Exception_011", T.RETURN_TO_SENDER, D.LOST),
    ("Exception", "Exception_013", T.FAILURE, D.LOST),
    ("Expired", "Expired_001", T.EXPIRED, D.STUCK),
])
def test_aftership_tags_map_onto_the_delivery_exceptions(
        aftership: AfterShipStandIn, tag: str, subtag: str, status: TrackingStatus,
        exception: DeliveryException) -> None:
    aftership.parcel("1Z999AA10123456784", "ups", tag, subtag, checkpoints=[
        ("InTransit", "Departed facility", "Louisville", "KY"),
        (tag, "The latest word", "Seattle", "WA")], estimate=date(2030, 1, 2))
    client = aftership_client(aftership, Sleeps())
    tracking = client.track("1Z999AA10123456784", "UPS")
    assert tracking.status is status and status.exception is exception
    assert tracking.carrier == "ups" and tracking.estimated_delivery == date(2030, 1, 2)
    assert [e.location for e in tracking.events] == ["Louisville, KY", "Seattle, WA"]
    assert (tracking.delivered_at is not None) is (status is T.DELIVERED)
    [created] = aftership.calls("POST", "/tracking/2026-07/trackings")
    assert created.body == {"tracking_number": "1Z999AA10123456784", "slug": "ups"}
    assert created.headers["as-api-key"] == aftership.api_key
    assert client.track("1Z999AA10123456784", "UPS") == tracking
    assert len(aftership.calls("GET", r"/tracking/2026-07/trackings/\w+")) == 1


def test_aftership_finds_a_tracking_that_exists_already(aftership: AfterShipStandIn) -> None:
    aftership.parcel("771234509876", "fedex", "InTransit")
    aftership_client(aftership, Sleeps()).track("771234509876", "FedEx")
    # another process (the shop's app) created it: found, not created twice
    tracking = aftership_client(aftership, Sleeps()).track("771234509876", "FedEx")
    assert tracking.status is T.IN_TRANSIT
    assert [c.status for c in aftership.calls("POST", "/tracking/2026-07/trackings")] == \
        [201, 400]
    [listed] = aftership.calls("GET", "/tracking/2026-07/trackings")
    assert listed.query == {"tracking_numbers": "771234509876", "slug": "fedex"}
    assert len(aftership.trackings) == 1


def test_aftership_refuses_a_wrong_key_as_unavailable(aftership: AfterShipStandIn) -> None:
    with pytest.raises(StoreUnavailable, match="refused the API key"):
        aftership_client(aftership, Sleeps(), key="asat_wrong").track("1", "ups")
    assert aftership.received[0].status == 401


def test_aftership_throttling_waits_for_the_rate_limit_reset(
        aftership: AfterShipStandIn) -> None:
    sleeps = Sleeps()
    client = aftership_client(aftership, sleeps)
    aftership.throttle_next, aftership.reset_in = 1, 1
    assert client.track("4819203799", "DHL").status is T.UNKNOWN
    [wait] = sleeps.waits
    assert 0.25 <= wait <= 1.0 + 0.01  # until X-RateLimit-Reset, at least the backoff
    aftership.throttle_next, aftership.reset_in = 3, 3600
    with pytest.raises(StoreUnavailable, match="kept throttling"):
        client.track("4819203799", "DHL")
    assert sleeps.waits[1:] == [2.0, 2.0]


# --- over the store backends -------------------------------------------------------------

def test_tracking_backend_settings_are_checked() -> None:
    assert tracking_backend({}) == "store"
    with pytest.raises(StoreConfigError, match="TRACKING_BACKEND='fedex'"):
        check_config({"TRACKING_BACKEND": "fedex"})
    with pytest.raises(StoreConfigError, match="EASYPOST_API_KEY"):
        check_config({"TRACKING_BACKEND": "easypost"})
    with pytest.raises(StoreConfigError, match="AFTERSHIP_API_KEY"):
        check_config({"TRACKING_BACKEND": "aftership"})
    with pytest.raises(StoreConfigError, match="https"):
        check_config({"TRACKING_BACKEND": "easypost", "EASYPOST_API_KEY": "k",
                      "EASYPOST_API_BASE_URL": "http://api.example.com"})


def test_the_store_backend_alone_tells_the_stores_view(tmp_path: Path, now: datetime) -> None:
    systems = open_systems({"DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"})
    assert not isinstance(systems, TrackedStore)
    systems.close()


def test_the_demo_stores_shipments_are_told_as_easypost_sees_them(
        easypost: EasyPostStandIn, tmp_path: Path, now: datetime) -> None:
    from actions.store.seed import seed_demo_store

    systems = open_systems({"DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
                            "TRACKING_BACKEND": "easypost",
                            "EASYPOST_API_KEY": easypost.api_key,
                            "EASYPOST_API_BASE_URL": easypost.url})
    assert isinstance(systems, TrackedStore)
    seed_demo_store(systems.store, now)  # type: ignore[arg-type]
    try:
        easypost.parcel("1Z999AA10123456784", "out_for_delivery", steps=[
            ("in_transit", "Departed facility", "Louisville", "KY"),
            ("out_for_delivery", "Out for delivery", "Seattle", "WA")],
            est_delivery=now + timedelta(days=1))
        systems.begin_turn()
        shipment = systems.delivery.get_shipment("A1001")
        assert shipment is not None
        assert shipment.carrier == "UPS" and shipment.tracking_number == "1Z999AA10123456784"
        assert shipment.latest_event is not None
        assert shipment.latest_event.description == "Out for delivery"
        assert shipment.eta == (now + timedelta(days=1)).date()
        assert shipment.exception is D.NONE
        # once per turn, whoever asks
        assert systems.delivery.shipments("A1001") == [shipment]
        assert len(easypost.calls("POST", "/v2/trackers")) == 1
        assert not easypost.calls("GET", r"/v2/trackers/.*")
        # A1016 is delayed in the store; the carrier says it failed: lost
        easypost.parcel("4819203799", "failure",
                        steps=[("failure", "Package damaged beyond delivery", "Cincinnati",
                                "OH")])
        assert systems.delivery.get_shipment("A1016").exception is D.LOST  # type: ignore
        # a new turn reads again; the service down: the store's view, not an error
        systems.begin_turn()
        easypost.fail_next = 10
        stored = systems.delivery.get_shipment("A1016")
        assert stored is not None and stored.exception is D.DELAYED
        easypost.fail_next = 0
    finally:
        systems.close()


def test_a_woocommerce_shops_parcels_are_told_as_aftership_sees_them(
        aftership: AfterShipStandIn, woocommerce_shop: WooCommerceStandIn,
        tmp_path: Path) -> None:
    """WooCommerce keeps only the tracking number: the carrier's events and estimate come
    from the service."""
    systems = open_systems({**woocommerce_env(woocommerce_shop),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
                            "TRACKING_BACKEND": "aftership",
                            "AFTERSHIP_API_KEY": aftership.api_key,
                            "AFTERSHIP_API_BASE_URL": aftership.base_url})
    try:
        assert isinstance(systems, TrackedStore)
        before = systems.store.delivery.get_shipment("A1001")
        assert before is not None and before.events == ()
        aftership.parcel(before.tracking_number, slug_of(before.carrier), "AttemptFail",
                         checkpoints=[("AttemptFail", "Delivery attempted: no access",
                                       "Seattle", "WA")], estimate=date(2030, 1, 3))
        systems.begin_turn()
        shipment = systems.delivery.get_shipment("A1001")
        assert shipment is not None and shipment.exception is D.DELAYED
        assert shipment.latest_event is not None
        assert shipment.latest_event.description == "Delivery attempted: no access"
        assert shipment.eta == date(2030, 1, 3)
        assert shipment.tracking_number == before.tracking_number
    finally:
        systems.close()


# --- the playbooks on the carrier's word (the actions, as the action server runs them) --

@pytest.fixture
def tracked_actions(actions_store: Any, easypost: EasyPostStandIn,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[EasyPostStandIn]:
    """The actions on the demo store, TRACKING_BACKEND=easypost on the stand-in."""
    from actions.conversation import shared_store

    shared_store().close()
    for name, value in {"TRACKING_BACKEND": "easypost", "EASYPOST_API_KEY": easypost.api_key,
                        "EASYPOST_API_BASE_URL": easypost.url}.items():
        monkeypatch.setenv(name, value)
    shared_store.cache_clear()
    assert isinstance(shared_store(), TrackedStore)
    yield easypost


async def test_a_late_parcel_the_carrier_delivered_is_told_delivered_and_claimable(
        tracked_actions: EasyPostStandIn) -> None:
    from tests.actions.test_actions import resolve

    tracked_actions.parcel("4819203799", "delivered", steps=[
        ("in_transit", "Departed facility", "Cincinnati", "OH"),
        ("delivered", "Delivered, front door", "Austin", "TX")])
    late = await resolve("delivery_problem", "A1016")  # late in the store
    assert late.responses == ["utter_status_delivered"]
    missing = await resolve("not_received", "A1016")
    assert missing.responses == ["utter_offer_claim"]
    assert "DHL shows it delivered on" in missing.texts[0]


async def test_a_parcel_the_carrier_failed_gets_the_lost_parcel_playbook(
        tracked_actions: EasyPostStandIn) -> None:
    from tests.actions.test_actions import resolve

    tracked_actions.parcel("1Z999AA10123456784", "return_to_sender",
                           steps=[("return_to_sender", "Returned to shipper", "Seattle",
                                   "WA")])
    lost = await resolve("delivery_problem", "A1001")  # on its way in the store
    assert lost.responses[0] == "utter_parcel_lost"
