"""{{ cookiecutter.project_name.encode('unicode_escape').decode() | replace('"', '\\x22') }}

{{ cookiecutter.description.encode('unicode_escape').decode() | replace('"', '\\x22') }}
"""
