"""The case-run API's createCaseRun, safe against concurrent requests and crashes
(the README's example)."""

import statefile

store = statefile.Store("data")  # cleans up after writers that crashed


def create_case_run(case: dict[str, object]) -> int:
    doc = store.doc("view/resData.json")
    with doc.update(default=dict) as data:  # locked: concurrent requests queue up
        data.setdefault("cases", []).append(case)
        return len(data["cases"])  # written when the block ends; nothing if it raised


if __name__ == "__main__":
    print(create_case_run({"id": "c-7", "scenario": "baseline"}))
    print(statefile.read_json("data/view/resData.json"))
