import argparse, os, sys, json
sys.path.insert(0, os.path.dirname(__file__))
import bench_batch as b
from flask_obitox.state import MemoryStateBackend
from instructions import add_instruction_options, count_instructions, run_counted_workloads
def batch():
    app = b.make_app(MemoryStateBackend(), OBITOX_EVENTS=os.environ.get("EV","1")=="1")
    c = app.test_client(); body = json.dumps(b.batch_body()).encode()
    def go():
        r = c.post("/obitox/uploads/batch", data=body, content_type="application/json"); assert r.status_code == 200
    return go
p = argparse.ArgumentParser(); add_instruction_options(p); args = p.parse_args()
if not run_counted_workloads(args, {"batch": batch, "boto3": b.cached_loop}):
    counts = count_instructions(args, ["batch", "boto3"])
    print(os.environ.get("EV","1"), {k: round(v/1e6,2) for k, v in counts.items()}, "M; ratio %.2f" % (counts["boto3"]/counts["batch"]))
