"""Every policy file the gateway reads, loaded and checked in one place: `bot validate`
and the gateway's start both use `load_policies`, so a file added here is validated
without touching either."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from actions.policy import (
    EscalationPolicy,
    Knowledge,
    PeakPolicy,
    load_knowledge,
    load_peak_policy,
    load_policy,
)
from bot.handoff.helpdesk_policy import HelpdeskPolicy, load_helpdesk_policy
from bot.handoff.policy import HandoffPolicy, load_handoff_policy
from bot.outreach.policy import MonitorPolicy, load_monitor_policy
from bot.privacy import PrivacyPolicy, load_privacy_policy
from bot.reporting.kpi import KpiPolicy, load_kpi_policy
from common.policy_files import parse_yaml_model, policy_dir
from connectors.config import ChannelPolicy


@dataclass(frozen=True)
class Policies:
    escalation: EscalationPolicy  # escalation.yml
    knowledge: Knowledge          # knowledge.yml
    channels: ChannelPolicy       # channels.yml
    handoff: HandoffPolicy        # handoff.yml
    peak: PeakPolicy              # peak.yml
    outreach: MonitorPolicy       # monitor.yml
    kpis: KpiPolicy               # kpis.yml
    privacy: PrivacyPolicy        # privacy.yml
    helpdesk: HelpdeskPolicy      # helpdesk.yml
    directory: Optional[Path] = None  # None: POLICY_DIR

    def with_channels(self, channels: ChannelPolicy) -> Policies:
        """These policies with another channel policy, and the outreach policy checked
        against it."""
        return dataclasses.replace(self, channels=channels,
                                   outreach=load_monitor_policy(channels, self.directory))


def load_channel_policy(directory: Optional[Path] = None) -> ChannelPolicy:
    return parse_yaml_model(ChannelPolicy, (directory or policy_dir()) / "channels.yml")


def load_policies(directory: Optional[Path] = None) -> Policies:
    """Every file of POLICY_DIR (or `directory`), each checked against the others it
    names; raises PolicyError naming the file and key."""
    escalation = load_policy(directory)
    channels = load_channel_policy(directory)
    handoff = load_handoff_policy(escalation, directory)
    return Policies(
        escalation=escalation,
        knowledge=load_knowledge(directory, policy=escalation),
        channels=channels,
        handoff=handoff,
        peak=load_peak_policy(directory),
        outreach=load_monitor_policy(channels, directory),
        kpis=load_kpi_policy(directory),
        privacy=load_privacy_policy(escalation, directory),
        helpdesk=load_helpdesk_policy(escalation, handoff, directory),
        directory=directory,
    )
