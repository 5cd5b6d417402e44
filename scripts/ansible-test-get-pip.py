"""Stand-in for ansible-test's pip bootstrap script (https://ci-files.testing.ansible.com/ansible-test/
get-pip-<version>.py), which ansible-test downloads to put pip into the virtual environments of its
sanity tests. That host is not reachable from our machines; PyPI is. `make sanity` downloads the same
pip release's wheel from PyPI beside this file (ansible-test's cache: ~/.ansible/test/cache/) and this
script installs it, as get-pip.py would: pip runs from its own wheel to install itself.
"""

import glob
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
version = os.path.basename(__file__)[len("get_pip_") : -len(".py")].replace("_", ".")
wheels = glob.glob(os.path.join(here, f"pip-{version}-*.whl"))
if not wheels:
    sys.exit(f"no pip-{version} wheel beside {__file__}: pip download pip=={version} --no-deps -d {here}")
sys.path.insert(0, wheels[0])

from pip._internal.cli.main import main  # noqa: E402  (importable only once the wheel is on sys.path)

args = sys.argv[1:]
extras = [name for name, flag in (("setuptools", "--no-setuptools"), ("wheel", "--no-wheel")) if flag not in args]
args = [a for a in args if a not in ("--no-setuptools", "--no-wheel")]
# args name the pip release ansible-test wants (pip==<version>): found beside this file, else on PyPI.
sys.exit(main(["install", "--upgrade", "--force-reinstall", "--find-links", here, *args, *extras]))
