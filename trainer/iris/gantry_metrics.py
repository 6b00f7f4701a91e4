import json  # gantry reads lines "@@gantry metric {JSON}"; see `gantry metrics`.
def log_metric(name, value, step=None):
    line = {"name": name, "value": float(value)}
    if step is not None: line["step"] = int(step)
    print("@@gantry metric " + json.dumps(line), flush=True)
