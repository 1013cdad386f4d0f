"""The example payloads of telemetry.md, one per dialect, as the canonicalize tests start from them."""

#: the reading time of the Tesla example (the gateway's local time with its offset)
T_TIME = "2026-11-23T11:29:59.598548052-08:00"
TESLA = {"aggregates": {
    "site": {"last_communication_time": T_TIME, "instant_power": 160.2},
    "battery": {"last_communication_time": T_TIME, "instant_power": -2400.0},
    "load": {"last_communication_time": T_TIME, "instant_power": 860.2},
    "solar": {"last_communication_time": T_TIME, "instant_power": 3100.0}},
    "soe": {"percentage": 69.1},
    "grid_status": "SystemGridConnected"}
SONNEN = {"Timestamp": "2026-11-23 20:30:00", "USOC": 71, "RSOC": 73,
          "Pac_total_W": 1398, "Production_W": 0, "Consumption_W": 1410,
          "GridFeedIn_W": -12, "SystemStatus": "OnGrid"}
SUNSPEC = {"timestamp": 1795462493,
           "models": {"802": {"SoC": 6123, "SoC_SF": -2, "W": -25, "W_SF": 2, "WHRtg": 135, "WHRtg_SF": 2},
                      "203": {"W": 152, "W_SF": 1}}}
