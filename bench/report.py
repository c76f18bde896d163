"""
Print the tables of a results JSON (from C{python3 -m bench.run --json}) as
Markdown, for C{docs/performance.md}.

  python3 -m bench.report bench/results.json
"""

import argparse
import json


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "MB/s" or abs(value) < 100:
        return "%.1f" % value
    return "%.0f" % value


def markdown(result, sweep=False):
    lines = []
    header = ["scenario", "framing", "figure", "median", "min", "max", "baseline",
              "baseline median", "ratio", "target", "met?"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in result["rows"]:
        if (r["scenario"] == "sweep") != sweep:
            continue
        v, b = r["value"], r["baseline"]
        met = "-"
        if r["met"] is not None:
            met = "yes" if r["met"] else "**no**"
            if not r["targetApplies"]:
                met = "(%s)" % ("yes" if r["met"] else "no")
        lines.append("| " + " | ".join([
            r["scenario"], r["framing"], r["figure"],
            fmt(v and v["median"], r["unit"]), fmt(v and v["min"], r["unit"]),
            fmt(v and v["max"], r["unit"]), r["baselineName"] or "-",
            fmt(b and b["median"], r["unit"]),
            "%.2f×" % r["ratio"] if r["ratio"] is not None else "-",
            r["target"] or "-", met,
        ]) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.report")
    parser.add_argument("path")
    args = parser.parse_args(argv)
    with open(args.path) as f:
        result = json.load(f)
    m = result["machine"]
    print("Run of %s (%s mode, %.0f s): %s, %s cores, Python %s, Twisted %s, h2 %s, commit %s\n" % (
        result["startedAt"], result["mode"], result["elapsedSeconds"], m.get("cpu"),
        m.get("nproc"), m.get("python"), m.get("twisted"), m.get("h2"), m.get("commit")))
    print(markdown(result, sweep=False))
    print()
    print(markdown(result, sweep=True))


if __name__ == "__main__":
    main()
