from accounts import apis
from rig.api import route

urlpatterns = [
    route(r"accounts", apis.AccountCreateApi.as_view(), "account-create"),
    route(r"accounts/auth/local", apis.LoginApi.as_view(), "login"),
    route(r"accounts/auth/refresh", apis.RefreshApi.as_view(), "token-refresh"),
    route(r"accounts/password", apis.PasswordChangeApi.as_view(), "password-change"),
    route(r"accounts/me", apis.MeApi.as_view(), "me"),
]
