# Used for BENCHMARKS.md, "Scrapes". Run against `tessera up --walkers 10000`
# with a tessera.toml whose coordinator.admin_token is TOKEN below (the snapshot
# is on the admin API) and whose scenes_dir holds
# field.toml alone. Usage: python3 scrape_phases.py ROUNDS
#
# Alternates 20 s phases: no scrape / GET /metrics and the field snapshot every second.
# Reads the field's tick p99 from /v1/status at the end of each phase (the scene's
# own window), and the tick histogram from /metrics deltas for the phase.
import json, time, urllib.request, sys
BASE='http://127.0.0.1:7080'
TOKEN='scrape-test-admin-token-0123456789'
def get(path, auth=False):
    req=urllib.request.Request(BASE+path)
    if auth: req.add_header('Authorization','Bearer '+TOKEN)
    return urllib.request.urlopen(req, timeout=10).read()
def hist():
    # cumulative buckets of tessera_scene_tick_duration_seconds for field
    text=get('/metrics').decode()
    b={}
    for l in text.splitlines():
        if l.startswith('tessera_scene_tick_duration_seconds_bucket') and 'scene="field"' in l:
            le=l.split('le="')[1].split('"')[0]; b[le]=float(l.rsplit(' ',1)[1])
    return b
def p99(b0,b1):
    keys=sorted(b1, key=lambda k: float('inf') if k=='+Inf' else float(k))
    d=[(k,b1[k]-b0.get(k,0)) for k in keys]
    tot=d[-1][1]
    for k,v in d:
        if v>=0.99*tot: return k, tot
for rnd in range(int(sys.argv[1])):
    for mode in ['none','scrape']:
        b0=hist(); t0=time.time()
        while time.time()-t0<20:
            if mode=='scrape':
                get('/metrics'); get('/v1/scenes/field/snapshot', True)
            time.sleep(1)
        b1=hist()
        st=json.loads(get('/v1/status'))
        f=[s for s in st['scenes'] if s['name']=='field'][0]
        print(mode, 'p99 bucket (s) / ticks:', p99(b0,b1), 'status tick_p99_ms', f.get('tick_p99_ms'), flush=True)
