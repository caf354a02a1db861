import argparse, os, sys, uuid
sys.path.insert(0, os.path.dirname(__file__))
from flask import Flask
from flask_obitox import ObitoX
from flask_obitox.state import RedisStateBackend
from instructions import add_instruction_options, count_instructions, run_counted_workloads
PFX = "obitox-scratch-" + uuid.uuid4().hex[:8]
def app_():
    app = Flask("p")
    app.config.update(OBITOX_BUCKET="b", OBITOX_RATE_LIMITS="", OBITOX_REGION="us-east-1",
        OBITOX_AWS_ACCESS_KEY_ID="AKIDEXAMPLE", OBITOX_AWS_SECRET_ACCESS_KEY="x"*40,
        OBITOX_EVENTS=os.environ.get("EV","1")=="1")
    o = ObitoX(state=RedisStateBackend.from_url("redis://127.0.0.1:6379/15", prefix=PFX)); o.identity_loader(lambda: "u"); o.init_app(app); return app
app = app_(); c = app.test_client()
r = c.post("/obitox/uploads", json={"filename":"a.bin","contentType":"application/octet-stream","size":10**9})
uid = r.json["uploadId"]
def get():
    def go():
        r = c.get(f"/obitox/uploads/{uid}"); assert r.status_code==200
    return go
n=[0]
def post():
    def go():
        n[0]+=1
        r = c.post(f"/obitox/uploads/{uid}/progress", data=b'{"uploadedBytes":%d}'%n[0], content_type="application/json"); assert r.status_code==202, r.data
    return go
p = argparse.ArgumentParser(); add_instruction_options(p); args = p.parse_args()
try:
    if not run_counted_workloads(args, {"get": get, "post": post}):
        counts = count_instructions(args, ["get", "post"])
        print({k: round(v/1e3) for k, v in counts.items()}, "kinstr; ratio %.2f" % (counts["post"]/counts["get"]))
finally:
    import redis; rc = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    keys = list(rc.scan_iter(PFX + "*"))
    if keys: rc.delete(*keys)
