import sys, json, time
sys.path.insert(0, "/work/main/tests/integration")
from test_modules import *  # noqa

@pytest.mark.docker
def test_peek(tmp_path, share, service):
    args = experiment_args(share[0], service.state_dir, service.compose_file, service.project)
    t=time.perf_counter(); run, r = run_task(tmp_path, "lem_experiment", args); t1=time.perf_counter()-t
    print({k: v for k, v in r.items() if k not in ("result", "invocation")})
    print("result timing", r["result"]["timing"]["total_seconds"], "task wall", t1)
    campaign = write_campaign(tmp_path, [tiny("evil", model={"path": "/models/$(touch /tmp/pwned)"})], cycles=1)
    (evil,) = build_plan(load_campaign(campaign), ["localhost"]).experiments
    _, r = run_task(tmp_path, "lem_experiment", experiment_args(evil, service.state_dir, service.compose_file, service.project, timeout=100))
    print({k: v for k, v in r.items() if k not in ("result", "invocation")})
    from python_on_whales import DockerClient
    d = DockerClient(compose_files=[service.compose_file], compose_project_name=service.project)
    for i in range(3):
        t=time.perf_counter(); d.compose.config(return_json=True); print("config s", time.perf_counter()-t)
        t=time.perf_counter(); d.compose.execute("pytorch", ["true"], tty=False); print("exec s", time.perf_counter()-t)
