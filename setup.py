from configparser import ConfigParser
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

requirements = cfg.get('requirements','').split()
dev_requirements = cfg.get('dev_requirements','').split()
bench_requirements = cfg.get('bench_requirements','').split()
console_scripts = cfg.get('console_scripts','').split()

setuptools.setup(
    name = cfg['lib_name'],
    version = cfg['version'],
    description = cfg['description'],
    author = cfg['author'], author_email = cfg['author_email'],
    license = 'Apache Software License 2.0',
    packages = setuptools.find_packages(include=['ssl_workbench', 'ssl_workbench.*']),
    include_package_data = True,
    install_requires = requirements,
    extras_require = {'dev': dev_requirements, 'bench': bench_requirements},
    python_requires = '>=' + cfg['min_python'],
    zip_safe = False,
    entry_points = {'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d'],
                    'console_scripts': console_scripts},
)
